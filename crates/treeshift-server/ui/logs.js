// The migration's log: the records so far, then new ones as they come.

import * as api from "./api.js";
import { badge, h, table } from "./dom.js";

const KEEP = 2000;

export async function logsView(body, { name, params, signal }) {
  const level = h("select", { id: "l-level" }, ["ERROR", "WARN", "INFO", "DEBUG"].map((l) =>
    h("option", { value: l, selected: (params.get("level") || "INFO") === l }, l)));
  level.addEventListener("change", () => {
    location.hash = `#/m/${encodeURIComponent(name)}/logs?level=${level.value}`;
  });
  const rows = h("tbody");
  const row = (e) => h("tr", {}, h("td", {}, e.at), h("td", {}, badge(e.level.toLowerCase())), h("td", {}, e.target), h("td", { class: "path" }, e.message));
  const view = table([["At"], ["Level"], ["From"], ["Message"]], [], "Log records");
  view.querySelector("tbody").replaceWith(rows);
  body.replaceChildren(
    h("form", { class: "row", onsubmit: (e) => e.preventDefault() }, h("label", { for: "l-level" }, "At least", level)),
    view,
  );
  // The stream sends what is there, then what comes; the newest first.
  api
    .events(api.migrationPath(name, `/logs/events${api.query({ level: level.value })}`), signal, (event, data) => {
      if (event !== "log") return;
      rows.prepend(row(JSON.parse(data)));
      while (rows.childElementCount > KEEP) rows.lastElementChild.remove();
    })
    .catch(() => {});
}
