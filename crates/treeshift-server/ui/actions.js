// Approve (exactly the plan shown, by its hash) and copy (start, follow,
// verify, and the failures with a retry for each).

import * as api from "./api.js";
import { badge, bytes, card, count, duration, go, h, table, toast } from "./dom.js";
import { lineChart } from "./charts.js";
import { follow, Rate, startJob, stopJob } from "./views.js";

function select(id, options, chosen) {
  return h("select", { id }, options.map(([value, text]) => h("option", { value, selected: value === chosen }, text)));
}

export async function approveView(body, { name, status, params }) {
  const policy = select("a-policy", [
    ["skip", "skip: copy what is missing; leave what differs"],
    ["overwrite", "overwrite: replace what differs"],
    ["newer", "newer: replace what is older on the destination"],
    ["rename", "rename: keep the destination's copy aside, then copy"],
  ], params.get("policy") || "skip");
  const extras = select("a-extras", [
    ["leave", "leave: extras stay where they are"],
    ["quarantine", "quarantine: extras are moved aside"],
  ], params.get("extras") || "leave");
  const by = h("input", { type: "text", id: "a-by", autocomplete: "name" });
  const plan = h("div", { "aria-live": "polite" });
  const error = h("p", { class: "error", role: "alert" });
  const approve = h("button", { type: "button", disabled: true, "aria-describedby": "a-hash" }, "Approve this plan");
  let shown = null;
  const preview = async () => {
    error.textContent = "";
    approve.disabled = true;
    shown = await api.get(api.migrationPath(name, `/plan${api.query({ policy: policy.value, extras: extras.value })}`));
    const p = shown;
    plan.replaceChildren(
      h(
        "div",
        { class: "cards" },
        card("Items in the plan", count(p.items)),
        card("Files to copy", count(p.files)),
        card("Folders to create", count(p.folders)),
        card("Bytes to copy", bytes(p.bytes)),
        card("Left alone by the policy", count(p.skipped)),
        card("Destination items replaced", count(p.replaces)),
        card("Extras moved aside", count(p.quarantines)),
        card("Metadata only", count(p.metadata)),
        card("Further hard-link names", count(p.links)),
      ),
      h("p", { id: "a-hash" }, "Plan hash: ", h("span", { class: "plan", "data-plan-hash": p.plan_hash }, p.plan_hash)),
    );
    approve.disabled = !["discovered", "approved"].includes(status.phase) || !!status.job?.running;
  };
  approve.addEventListener("click", async () => {
    try {
      const report = await api.post(api.migrationPath(name, "/approve"), {
        policy: shown.policy,
        extras: shown.extras,
        plan_hash: shown.plan_hash,
        approved_by: by.value.trim() || undefined,
      });
      toast(`Approved: ${count(report.items)} items, plan ${report.plan_hash}`);
      go(`#/m/${encodeURIComponent(name)}/copy`);
    } catch (e) {
      // 409: the plan changed since it was shown; show the new one.
      error.textContent = e.message;
      if (e.status === 409) await preview();
    }
  });
  policy.addEventListener("change", preview);
  extras.addEventListener("change", preview);
  const current = status.approval
    ? h(
        "p",
        {},
        "Approved: policy ",
        status.approval.policy,
        ", extras ",
        status.approval.extras,
        `, ${count(status.approval.items)} items, plan `,
        h("span", { class: "plan" }, status.approval.plan_hash),
      )
    : h("p", {}, status.phase === "discovered" ? "Not approved yet." : `The migration is ${status.phase}: approval comes after discovery.`);
  body.replaceChildren(
    current,
    h("h2", {}, "What an approval covers"),
    h(
      "form",
      { class: "row", onsubmit: (e) => e.preventDefault(), "aria-label": "Plan" },
      h("label", { for: "a-policy" }, "Policy for what differs", policy),
      h("label", { for: "a-extras" }, "Extras on the destination", extras),
      h("label", { for: "a-by" }, "Approved by", by),
    ),
    plan,
    h("div", { class: "actions" }, approve),
    error,
  );
  await preview();
}

function progressBar(label, done, total) {
  const share = total ? Math.min(done / total, 1) : 0;
  return h(
    "div",
    {},
    h("div", { class: "sub" }, label),
    h(
      "div",
      { class: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(share * 100) },
      h("div", { style: null, "data-share": share.toFixed(3) }),
    ),
  );
}

function retryButton(name, path) {
  return h("button", { type: "button", class: "plain", onclick: () => startJob(name, "retry", { path }) }, "Retry");
}

async function failures(name) {
  const rows = [];
  for (const status of ["failed", "copy-failed"]) {
    const answer = await api.get(api.migrationPath(name, `/review${api.query({ status, limit: 200 })}`));
    for (const i of answer.items) {
      rows.push(
        h(
          "tr",
          {},
          h("td", { class: "path" }, i.path),
          h("td", {}, status === "failed" ? "discovery" : "copy"),
          h("td", { class: "error" }, i.reason || ""),
          h("td", {}, retryButton(name, i.path)),
        ),
      );
    }
  }
  return rows.length
    ? table([["Path"], ["Phase"], ["Reason"], ["Action"]], rows, "Failures")
    : h("p", {}, "No failures.");
}

export async function copyView(body, { name, status, signal }) {
  const job = status.job;
  const running = !!job?.running;
  const checksum = h("input", { type: "checkbox", id: "c-checksum" });
  const approved = !!status.approval;
  const live = h("div", { "aria-live": "polite" });
  const rate = new Rate((c) => c.bytes_done);
  const drawJob = (j) => {
    const p = j.progress;
    const speed = rate.recent();
    live.replaceChildren(
      h("div", { class: "cards" },
        card("Job", `${j.op}${j.running ? " (running)" : `: ${j.outcome?.state ?? ""}`}`),
        card("Elapsed", duration(j.elapsed_s)),
        card("Throughput", speed === null ? "–" : `${bytes(speed)}/s`),
        card("ETA", j.running && speed ? duration((p.bytes_total - p.bytes_done) / speed) : "–"),
      ),
      progressBar(`Items: ${count(p.items_done)} of ${count(p.items_total)}`, p.items_done, p.items_total),
      progressBar(`Bytes: ${bytes(p.bytes_done)} of ${bytes(p.bytes_total)}`, p.bytes_done, p.bytes_total),
      lineChart(rate.samples, { unit: "/s", format: bytes, label: `Bytes a second, ${j.op}` }),
      j.outcome?.state === "failed" ? h("p", { class: "error", role: "alert" }, j.outcome.error) : "",
    );
    for (const bar of live.querySelectorAll("[data-share]")) bar.style.width = `${bar.dataset.share * 100}%`;
  };
  const c = status.copy;
  const v = status.verify;
  body.replaceChildren(
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", disabled: running || !approved, onclick: () => startJob(name, "copy") }, "Copy"),
      h("button", { type: "button", disabled: running || !approved, onclick: () => startJob(name, "verify", { checksum: checksum.checked }) }, "Verify"),
      h("label", { for: "c-checksum" }, checksum, " compare content"),
      h("button", { type: "button", disabled: running, onclick: () => startJob(name, "retry") }, "Retry all failures"),
      h("button", { type: "button", class: "plain", disabled: !running, onclick: () => stopJob(name) }, "Stop"),
    ),
    approved ? "" : h("p", {}, "Nothing is copied before a plan is approved: see Approve."),
    live,
    h("h2", {}, "Copy"),
    c
      ? h("div", { class: "cards" },
          card("Planned", count(c.planned)),
          card("Copied", count(c.copied)),
          card("Pending", count(c.pending)),
          card("Skipped", count(c.skipped)),
          card("Failed", count(c.failed)),
          card("Changed since discovery", count(c.changed)),
          card("Bytes copied", `${bytes(c.bytes_copied)} of ${bytes(c.bytes_planned)}`),
        )
      : h("p", {}, "No copy yet."),
    h("h2", {}, "Verify"),
    v
      ? h("div", { class: "cards" },
          card("Checked", count(v.checked)),
          card("Equal", count(v.verified)),
          card("Mismatch", count(v.mismatch)),
          card("Failed", count(v.failed)),
          card("Content compared", v.checksum ? "yes" : "no"),
        )
      : h("p", {}, "Not verified yet."),
    h("h2", {}, "Failures"),
    await failures(name),
  );
  if (job && job.op !== "discover") {
    await rate.load(name);
    drawJob(job);
  }
  if (running) {
    follow(name, signal, (j) => {
      rate.add(j.elapsed_s, j.progress);
      drawJob(j);
    }, () => go(location.hash));
  }
  // The verify status, if any, is shown above: a badge for the whole.
  if (v) live.prepend(badge(v.mismatch + v.failed ? "mismatch" : "verified"));
}
