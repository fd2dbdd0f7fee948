// The migrations list, one migration's header and its overview (live
// progress of the running job). The other tabs are in their own files.

import * as api from "./api.js";
import { badge, bytes, card, count, duration, go, h, table, toast } from "./dom.js";
import { lineChart } from "./charts.js";
import { exploreView } from "./explore.js";
import { approveView, copyView } from "./actions.js";
import { logsView } from "./logs.js";

export const TABS = [
  ["overview", "Overview"],
  ["explore", "Explore"],
  ["approve", "Approve"],
  ["copy", "Copy"],
  ["logs", "Logs"],
];

export async function listView(main) {
  const list = await api.get("/api/migrations");
  const rows = list.map((m) =>
    h(
      "tr",
      {},
      h("td", { class: "path" }, h("a", { href: `#/m/${encodeURIComponent(m.name)}/overview` }, m.name)),
      h("td", {}, m.phase ? badge(m.phase) : badge("failed")),
      h("td", {}, m.job ? `${m.job.op}: ${m.job.running ? "running" : m.job.outcome?.state ?? ""}` : "–"),
      h("td", {}, m.interrupted ? badge("interrupted") : "", m.error ? h("span", { class: "error" }, m.error) : ""),
    ),
  );
  main.replaceChildren(
    h("h1", {}, "Migrations"),
    list.length
      ? table([["Name"], ["Phase"], ["Job"], ["Notes"]], rows, "Migrations")
      : h("p", {}, "No migrations yet: create one below."),
    h("h2", {}, "New migration"),
    createForm(),
  );
}

function lines(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean);
}

// NAME=VALUE lines as an object.
function pairs(text) {
  const out = {};
  for (const [n, line] of lines(text).entries()) {
    const at = line.indexOf("=");
    // The line is not shown: it may be a secret.
    if (at < 1) throw new Error(`secrets: line ${n + 1} is not NAME=VALUE`);
    out[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  return out;
}

function createForm() {
  const input = (id, attrs = {}) => h("input", { type: "text", id, name: id, ...attrs });
  const check = (id) => h("input", { type: "checkbox", id, name: id });
  const f = {
    name: input("new-name", { required: true, autocomplete: "off", "aria-describedby": "new-name-help" }),
    src: input("new-src", { required: true, placeholder: "/data, s3://bucket/prefix, sim:seed=1" }),
    dst: input("new-dst", { required: true, placeholder: "/mnt/new, azblob://container/prefix" }),
    excludes: h("textarea", { id: "new-excludes", placeholder: "one pattern a line, e.g. *.tmp" }),
    includes: h("textarea", { id: "new-includes" }),
    srcSecrets: h("textarea", { id: "new-src-secrets", autocomplete: "off", spellcheck: "false", "aria-describedby": "new-secrets-help" }),
    dstSecrets: h("textarea", { id: "new-dst-secrets", autocomplete: "off", spellcheck: "false", "aria-describedby": "new-secrets-help" }),
    state: input("new-state", { autocomplete: "off", spellcheck: "false", placeholder: "postgres://user@host:5432/db", "aria-describedby": "new-state-help" }),
  };
  const checks = [
    ["keep_owners", "Keep owners"],
    ["keep_xattrs", "Keep extended attributes"],
    ["keep_acls", "Keep ACLs"],
    ["keep_hard_links", "Keep hard links"],
    ["skip_hidden", "Skip hidden files"],
    ["dst_case_insensitive", "Destination folds letter case"],
  ].map(([id, text]) => [id, check(`new-${id}`), text]);
  const error = h("p", { class: "error", role: "alert" });
  const submit = async (e) => {
    e.preventDefault();
    error.textContent = "";
    let secrets;
    try {
      secrets = { src: pairs(f.srcSecrets.value), dst: pairs(f.dstSecrets.value) };
    } catch (err) {
      error.textContent = err.message;
      return;
    }
    const on = Object.fromEntries(checks.map(([id, el]) => [id, el.checked]));
    const body = {
      name: f.name.value.trim(),
      src: f.src.value.trim(),
      dst: f.dst.value.trim(),
      filter: { excludes: lines(f.excludes.value), includes: lines(f.includes.value), skip_hidden: on.skip_hidden },
      dst_case_insensitive: on.dst_case_insensitive,
      keep_owners: on.keep_owners,
      keep_xattrs: on.keep_xattrs,
      keep_acls: on.keep_acls,
      keep_hard_links: on.keep_hard_links,
      secrets,
    };
    if (f.state.value.trim()) body.state = f.state.value.trim();
    try {
      await api.post("/api/migrations", body);
      f.srcSecrets.value = f.dstSecrets.value = f.state.value = "";
      toast(`Created ${body.name}`);
      go(`#/m/${encodeURIComponent(body.name)}/overview`);
    } catch (err) {
      error.textContent = err.message;
    }
  };
  return h(
    "form",
    { class: "grid", onsubmit: submit, "aria-label": "New migration" },
    h("label", { for: "new-name" }, "Name"),
    h("div", {}, f.name, h("div", { class: "sub", id: "new-name-help" }, "Letters, digits, dot, dash, underscore: the state file's name.")),
    h("label", { for: "new-src" }, "Source"),
    f.src,
    h("label", { for: "new-dst" }, "Destination"),
    f.dst,
    h("label", { for: "new-excludes" }, "Exclude"),
    f.excludes,
    h("label", { for: "new-includes" }, "Include only"),
    f.includes,
    h("label", { for: "new-src-secrets" }, "Source secrets"),
    f.srcSecrets,
    h("label", { for: "new-dst-secrets" }, "Destination secrets"),
    h("div", {}, f.dstSecrets, h("div", { class: "sub", id: "new-secrets-help" },
      "NAME=VALUE a line (e.g. AWS_SECRET_ACCESS_KEY=…), sealed into the state file and never shown again; the server needs a key. Empty: the server's environment.")),
    h("label", { for: "new-state" }, "State database"),
    h("div", {}, f.state, h("div", { class: "sub", id: "new-state-help" },
      "Optional: a PostgreSQL database made for this migration, so worker processes on other hosts can share it. Empty: a state file in the server's folder.")),
    h("span", {}, "Options"),
    h("div", { class: "checks" }, checks.map(([id, el, text]) => h("label", { for: `new-${id}` }, el, " ", text))),
    h("div", { class: "full" }, h("button", { type: "submit" }, "Create"), error),
  );
}

// One migration: its header, then the tab's view.
export async function migrationView(main, name, tab, params, signal) {
  const status = await api.get(api.migrationPath(name));
  const header = h(
    "div",
    {},
    h("h1", {}, name, " ", badge(status.phase), status.interrupted ? [" ", badge("interrupted")] : null),
    h("p", { class: "sub" }, `${status.src_location} → ${status.dst_location}`),
  );
  const body = h("div");
  main.replaceChildren(header, body);
  const views = { overview: overviewView, explore: exploreView, approve: approveView, copy: copyView, logs: logsView };
  const view = views[tab];
  if (!view) throw new Error(`no tab '${tab}'`);
  await view(body, { name, status, params, signal });
}

// Starts a job and shows the overview, where its progress is drawn.
export async function startJob(name, op, options = {}) {
  try {
    await api.post(api.migrationPath(name, `/jobs/${op}`), options);
    toast(`${op} started`);
    go(`#/m/${encodeURIComponent(name)}/${op === "discover" ? "overview" : "copy"}`);
  } catch (e) {
    toast(e.message);
  }
}

export async function stopJob(name) {
  try {
    await api.post(api.migrationPath(name, "/stop"));
    toast("Stopping: the job ends where it stands, and resumes from there when started again");
  } catch (e) {
    toast(e.message);
  }
}

// Follows the migration's job: `onProgress(job)` for each event until it
// ends, then `onDone(job)`.
export function follow(name, signal, onProgress, onDone) {
  api
    .events(api.migrationPath(name, "/events"), signal, (event, data) => {
      const job = JSON.parse(data);
      if (event === "progress") onProgress(job);
      if (event === "done") onDone(job);
    })
    .catch(() => {});
}

// How fast a job goes: the change of `measure(counts)` a second, sample
// by sample, for the chart and the ETA. `counts` is a job's progress or
// a sample of its history (the same fields).
export class Rate {
  constructor(measure) {
    this.measure = measure;
    this.samples = [];
    this.last = null;
  }

  add(t, counts) {
    const now = { t, v: this.measure(counts) };
    if (this.last && now.t > this.last.t) {
      this.samples.push({ t: now.t, v: (now.v - this.last.v) / (now.t - this.last.t) });
      if (this.samples.length > 1500) this.samples.shift();
    }
    this.last = now;
  }

  // What the job did before this page was opened.
  async load(name) {
    const history = await api.get(api.migrationPath(name, "/history"));
    for (const s of history.samples) this.add(s.t_s, s);
  }

  // The mean over the last 10 seconds.
  recent() {
    const end = this.samples.at(-1)?.t ?? 0;
    const window = this.samples.filter((s) => s.t > end - 10);
    return window.length ? window.reduce((a, s) => a + s.v, 0) / window.length : null;
  }
}

function jobButtons(name, status, job) {
  const running = job?.running;
  const walking = ["created", "discovering", "discovered"].includes(status.phase) && !status.approval;
  return h(
    "div",
    { class: "actions" },
    walking
      ? h(
          "button",
          { type: "button", disabled: running, onclick: () => startJob(name, "discover") },
          status.phase === "created" ? "Discover" : status.phase === "discovering" ? "Resume discovery" : "Discover again",
        )
      : null,
    h("button", { type: "button", class: "plain", disabled: !running, onclick: () => stopJob(name) }, "Stop"),
  );
}

async function overviewView(body, { name, status, signal }) {
  const job = status.job;
  const live = h("div", { "aria-live": "polite" });
  const chart = h("div");
  const discovery = job?.op === "discover";
  const rate = new Rate((c) => (discovery ? c.src_folders_listed + c.dst_folders_listed : c.bytes_done));
  const unit = discovery ? " folders/s" : "/s";
  const format = discovery ? (v) => v.toFixed(0) : bytes;
  const drawJob = (j) => {
    const p = j.progress;
    const cards = [
      card("Job", `${j.op}${j.running ? " (running)" : `: ${j.outcome?.state ?? ""}`}`),
      card("Elapsed", duration(j.elapsed_s)),
    ];
    if (j.op === "discover") {
      cards.push(
        card("Source round", count(p.src_round)),
        card("Destination round", count(p.dst_round)),
        card("Folders listed (src / dst)", `${count(p.src_folders_listed)} / ${count(p.dst_folders_listed)}`),
        card("Nodes found (src / dst)", `${count(p.src_nodes_found)} / ${count(p.dst_nodes_found)}`),
        card("Folders/s", j.running ? (rate.recent() === null ? "–" : rate.recent().toFixed(0)) : `${((p.src_folders_listed + p.dst_folders_listed) / Math.max(j.elapsed_s, 0.001)).toFixed(0)} on average`),
      );
    } else if (p.items_total) {
      const speed = rate.recent();
      const eta = speed ? (p.bytes_total - p.bytes_done) / speed : null;
      cards.push(
        card("Items", `${count(p.items_done)} of ${count(p.items_total)}`),
        card("Bytes", `${bytes(p.bytes_done)} of ${bytes(p.bytes_total)}`),
        card("Throughput", speed === null ? "–" : `${bytes(speed)}/s`),
        card("ETA", j.running ? duration(eta) : "–"),
      );
    }
    const error = j.outcome?.state === "failed" ? h("p", { class: "error", role: "alert" }, j.outcome.error) : null;
    live.replaceChildren(h("div", { class: "cards" }, cards), error ?? "");
    chart.replaceChildren(
      lineChart(rate.samples, { unit, format, label: discovery ? "Folders listed a second" : "Bytes copied a second" }),
    );
  };
  const buttons = h("div");
  const drawButtons = (j) => buttons.replaceChildren(jobButtons(name, status, j));
  drawButtons(job);
  const counts = h("div");
  const drawCounts = (s) =>
    counts.replaceChildren(
      h(
        "div",
        { class: "cards" },
        card("Source", `${count(s.src.files)} files, ${count(s.src.folders)} folders, ${bytes(s.src.bytes)}`),
        card("Destination", `${count(s.dst.files)} files, ${count(s.dst.folders)} folders, ${bytes(s.dst.bytes)}`),
        card("Missing", count(s.missing)),
        card("Same", count(s.same)),
        card("Differs", count(s.differs + s.outdated)),
        card("Conflict", count(s.conflict)),
        card("Extra", count(s.extra)),
        card("Excluded", count(s.excluded)),
        card("Failed", count(s.failed + s.invalid_name)),
        card("To copy", `${count(s.to_copy.files)} files, ${bytes(s.to_copy.bytes)}`),
        card("Estimated copy time", duration(s.estimate.eta_s)),
        card("Rounds sealed (src / dst)", `${s.src_rounds.sealed}${s.src_rounds.done ? " ✓" : ""} / ${s.dst_rounds.sealed}${s.dst_rounds.done ? " ✓" : ""}`),
      ),
    );
  drawCounts(status);
  const s = status;
  const rounds = table(
    [["Side"], ["Round", "num"], ["Folders", "num"], ["Children", "num"], ["Folders/s", "num"], ["Sealed"]],
    s.rounds.map((r) =>
      h(
        "tr",
        {},
        h("td", {}, r.side),
        h("td", { class: "num" }, r.depth),
        h("td", { class: "num" }, count(r.metrics.folders)),
        h("td", { class: "num" }, count(r.metrics.children)),
        h("td", { class: "num" }, r.metrics.folders_per_s ? r.metrics.folders_per_s.toFixed(0) : "–"),
        h("td", {}, r.at),
      ),
    ),
    "Discovery rounds",
  );
  const errors = s.errors.recent.length
    ? table(
        [["Side"], ["Phase"], ["Path"], ["Error"]],
        s.errors.recent.map((e) =>
          h("tr", {}, h("td", {}, e.side), h("td", {}, e.phase), h("td", { class: "path" }, e.path), h("td", { class: "error" }, `${e.kind}: ${e.message}`)),
        ),
        "Recent errors",
      )
    : h("p", {}, "No errors.");
  body.replaceChildren(
    buttons,
    h("h2", {}, "Job"),
    live,
    chart,
    h("h2", {}, "Discovery"),
    counts,
    h("h2", {}, `Errors (${count(s.errors.total)})`),
    errors,
    h("h2", {}, "Rounds"),
    rounds,
  );
  if (!job) {
    live.replaceChildren(h("p", {}, "No job has run in this server yet."));
    return;
  }
  await rate.load(name);
  drawJob(job);
  let refreshing = false;
  let refreshed = Date.now();
  if (job.running) {
    follow(
      name,
      signal,
      (j) => {
        rate.add(j.elapsed_s, j.progress);
        drawJob(j);
        // The counts, which a status read makes, every 5 s at most.
        if (!refreshing && Date.now() - refreshed > 5000) {
          refreshing = true;
          api
            .get(api.migrationPath(name))
            .then(drawCounts, () => {})
            .finally(() => {
              refreshing = false;
              refreshed = Date.now();
            });
        }
      },
      () => go(location.hash),
    );
  }
}
