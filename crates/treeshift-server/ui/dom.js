// Small helpers for building the page. Text always goes in as text nodes,
// never as HTML, so a file name cannot become markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n, u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

export function count(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en");
}

export function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.round(s);
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  return hh ? `${hh} h ${mm} min` : mm ? `${mm} min ${ss} s` : `${ss} s`;
}

const TONE = {
  same: "ok", copied: "ok", verified: "ok", done: "ok", approved: "ok",
  missing: "warn", differs: "warn", outdated: "warn", conflict: "bad", changed: "warn",
  failed: "bad", "invalid-name": "bad", "copy-failed": "bad", mismatch: "bad", interrupted: "bad",
};

export function badge(text) {
  return h("span", { class: `badge ${TONE[text] || ""}` }, text);
}

export function card(label, value) {
  return h("div", { class: "card" }, h("div", { class: "k" }, label), h("div", { class: "v" }, value));
}

export function table(headers, rows, caption) {
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      {},
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", {}, h("tr", {}, headers.map(([text, cls]) => h("th", { scope: "col", class: cls }, text)))),
      h("tbody", {}, rows),
    ),
  );
}

export function toast(message) {
  const el = document.getElementById("toast");
  el.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.textContent = ""), 6000);
}

// A labelled control: the label wraps the control, so it is named for
// screen readers and a click on the text focuses it.
export function field(text, control) {
  return h("label", {}, text, control);
}

// Shows `hash`, drawing it again when it is already shown.
export function go(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}
