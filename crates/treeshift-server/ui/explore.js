// The review explorer: one folder at a time, a treemap of the bytes still
// to copy below each child, the children with their status and size; or,
// with a status, a search or a size range, the matching items under the
// folder, page by page.

import * as api from "./api.js";
import { badge, bytes, count, go, h, table } from "./dom.js";
import { treemap } from "./charts.js";

// The statuses whose bytes a copy would move (under some policy).
const TO_COPY = new Set(["missing", "differs", "outdated"]);
const STATUSES = ["all", "missing", "differs", "outdated", "conflict", "same", "extra", "excluded", "invalid-name",
  "failed", "pending", "copied", "skipped", "changed", "copy-failed", "mismatch"];

function link(name, params) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== ""));
  const text = q.toString();
  return `#/m/${encodeURIComponent(name)}/explore${text ? `?${text}` : ""}`;
}

function base(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

function crumbs(name, path) {
  const out = [h("a", { href: link(name, {}) }, "(root)")];
  let at = "";
  for (const part of path ? path.split("/") : []) {
    at = at ? `${at}/${part}` : part;
    out.push(" / ", h("a", { href: link(name, { path: at }) }, part));
  }
  return h("nav", { class: "crumbs", "aria-label": "Folder" }, out);
}

function toCopy(child) {
  if (child.kind === "folder") {
    return child.below.filter((b) => TO_COPY.has(b.status)).reduce((a, b) => a + b.bytes, 0);
  }
  return TO_COPY.has(child.status) ? child.size : 0;
}

function filterForm(name, path, params) {
  const status = h("select", { id: "f-status" }, STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)));
  const search = h("input", { type: "text", id: "f-search", value: params.get("search") || "" });
  const min = h("input", { type: "number", id: "f-min", min: 0, value: params.get("min_size") || "" });
  const max = h("input", { type: "number", id: "f-max", min: 0, value: params.get("max_size") || "" });
  const submit = (e) => {
    e.preventDefault();
    go(link(name, { path, status: status.value === "all" && !search.value && !min.value && !max.value ? "" : status.value, search: search.value, min_size: min.value, max_size: max.value }));
  };
  return h(
    "form",
    { class: "row", onsubmit: submit, role: "search", "aria-label": "Filter items" },
    h("label", { for: "f-status" }, "Status", status),
    h("label", { for: "f-search" }, "Name contains", search),
    h("label", { for: "f-min" }, "Min bytes", min),
    h("label", { for: "f-max" }, "Max bytes", max),
    h("button", { type: "submit" }, "Filter"),
    h("a", { href: link(name, { path }) }, "Clear"),
  );
}

export async function exploreView(body, { name, params, signal }) {
  const path = params.get("path") || "";
  const filtered = ["status", "search", "min_size", "max_size"].some((k) => params.get(k));
  body.replaceChildren(crumbs(name, path), filterForm(name, path, params));
  if (filtered) await matches(body, name, path, params, signal);
  else await folder(body, name, path);
}

async function folder(body, name, path) {
  const list = h("div");
  const map = h("div");
  body.append(h("h2", {}, "Bytes to copy, by child"), map, h("h2", {}, "Children"), list);
  const rows = [];
  const children = [];
  let after;
  const more = h("button", { type: "button", class: "plain" }, "More children");
  const page = async () => {
    const answer = await api.get(api.migrationPath(name, `/browse${api.query({ path, after, limit: 1000 })}`));
    after = answer.next;
    children.push(...answer.children);
    for (const c of answer.children) {
      const below = c.below.map((b) => `${b.status} ${count(b.items)} (${bytes(b.bytes)})`).join(", ");
      const label = base(c.path);
      rows.push(
        h(
          "tr",
          {},
          h("td", { class: "path" }, c.kind === "folder" && c.side === "src" ? h("a", { href: link(name, { path: c.path }) }, label) : label),
          h("td", {}, c.kind),
          h("td", {}, c.side === "dst" ? "destination" : "source"),
          h("td", {}, badge(c.status)),
          h("td", { class: "num" }, c.kind === "folder" ? "" : bytes(c.size)),
          h("td", { class: "num" }, bytes(toCopy(c))),
          h("td", {}, below),
        ),
      );
    }
    map.replaceChildren(
      treemap(
        children.map((c) => ({
          key: c.path,
          label: `${base(c.path)} · ${bytes(toCopy(c))}`,
          value: toCopy(c),
          title: `${base(c.path)}: ${bytes(toCopy(c))} to copy`,
          open: c.kind === "folder" && c.side === "src" ? () => go(link(name, { path: c.path })) : null,
        })),
        // Drawn at the width it is shown at, so its labels stay legible
        // on a phone.
        {
          width: Math.max(320, map.clientWidth || 960),
          height: Math.min(360, Math.max(200, Math.round((map.clientWidth || 960) * 0.35))),
          label: `Bytes to copy under ${path || "the root"}, by child; a folder opens on Enter`,
        },
      ),
    );
    list.replaceChildren(
      rows.length
        ? table([["Name"], ["Kind"], ["Side"], ["Status"], ["Size", "num"], ["To copy", "num"], ["Below, by status"]], rows, "Children")
        : h("p", {}, "This folder has no children recorded."),
      after ? more : "",
    );
  };
  more.addEventListener("click", page);
  await page();
}

async function matches(body, name, path, params) {
  const list = h("div");
  body.append(h("h2", {}, "Matching items"), list);
  const rows = [];
  let after;
  const more = h("button", { type: "button", class: "plain" }, "More");
  const page = async () => {
    const q = {
      status: params.get("status") || "all",
      prefix: path,
      search: params.get("search"),
      min_size: params.get("min_size"),
      max_size: params.get("max_size"),
      after,
      limit: 500,
    };
    const answer = await api.get(api.migrationPath(name, `/review${api.query(q)}`));
    after = answer.next;
    for (const i of answer.items) {
      rows.push(
        h(
          "tr",
          {},
          h("td", { class: "path" }, i.path),
          h("td", {}, i.kind),
          h("td", {}, i.side === "dst" ? "destination" : "source"),
          h("td", {}, badge(i.status)),
          h("td", { class: "num" }, i.kind === "folder" ? "" : bytes(i.size)),
          h("td", {}, i.reason || ""),
        ),
      );
    }
    list.replaceChildren(
      rows.length ? table([["Path"], ["Kind"], ["Side"], ["Status"], ["Size", "num"], ["Reason"]], rows, "Matching items") : h("p", {}, "Nothing matches."),
      after ? more : "",
    );
  };
  more.addEventListener("click", page);
  await page();
}
