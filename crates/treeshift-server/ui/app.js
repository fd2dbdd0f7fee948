// The page's router: `#/` lists the migrations, `#/m/NAME/TAB?...` shows
// one. Each render gets an abort signal that the next navigation raises,
// which ends the event streams the previous view had open.

import { ApiError, setToken } from "./api.js";
import { h } from "./dom.js";
import { listView, migrationView, TABS } from "./views.js";

let current = null;

function parse() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(search) };
}

function tabs(name, tab) {
  const nav = document.getElementById("tabs");
  nav.replaceChildren();
  if (!name) return;
  for (const [id, title] of TABS) {
    nav.append(
      h("a", { href: `#/m/${encodeURIComponent(name)}/${id}`, "aria-current": id === tab ? "page" : null }, title),
    );
  }
}

function tokenForm(main, message) {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true });
  main.replaceChildren(
    h("h1", {}, "This server needs its token"),
    h("p", { class: "sub" }, message),
    h(
      "form",
      {
        class: "row",
        onsubmit: (e) => {
          e.preventDefault();
          setToken(input.value.trim());
          render();
        },
      },
      h("label", { for: "token" }, "Token"),
      input,
      h("button", { type: "submit" }, "Use it"),
    ),
  );
  input.focus();
}

async function render() {
  current?.abort();
  current = new AbortController();
  const signal = current.signal;
  const main = document.getElementById("main");
  const { parts, params } = parse();
  main.setAttribute("aria-busy", "true");
  try {
    if (parts[0] === "m" && parts[1]) {
      const tab = parts[2] || "overview";
      tabs(parts[1], tab);
      await migrationView(main, parts[1], tab, params, signal);
    } else {
      tabs(null);
      await listView(main, signal);
    }
  } catch (e) {
    if (signal.aborted) return;
    if (e instanceof ApiError && e.status === 401) {
      tokenForm(main, e.message);
      return;
    }
    main.replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, e.message));
  } finally {
    if (!signal.aborted) main.setAttribute("aria-busy", "false");
  }
}

window.addEventListener("hashchange", () => {
  render();
  document.getElementById("main").focus({ preventScroll: true });
});
render();
