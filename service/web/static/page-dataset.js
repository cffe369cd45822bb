// One dataset version: row counts, digest, lineage, the query, exports, and its training runs.
import { api, apiText, download, loadSubject, requireSession, showProblem, startPage } from "./api.js";
import { $, badge, facts, h, num, poll, progressBar, replace, when } from "./dom.js";

const datasetId = Number(document.body.dataset.objectId);
// A version is queued or running while a worker freezes it (copies its rows); then it is final.
const FREEZING = new Set(["queued", "running"]);

function lineage(version) {
  const l = version.lineage || {};
  const parts = [];
  parts.push(h("h3", {}, "Jobs"), h("ul", {}, (l.jobs || []).map((job) => h("li", {},
    h("a", { href: `/ui/jobs/${job.id}` }, `job #${job.id}`), ` — ${num(job.rows)} rows · recipe `,
    `${job.recipe.name} v${job.recipe.version} · teacher `, h("code", {}, job.teacher.model || job.teacher.base_url || "?")))));
  if ((l.filter_runs || []).length) {
    parts.push(h("h3", {}, "Filter runs"), h("ul", {}, l.filter_runs.map((run) => h("li", {},
      `run #${run.id} `, badge(run.status), ` ${(run.filters || []).map((f) => f.name || f.type).join(", ")}`))));
  }
  const filters = Object.entries(l.filters || {});
  if (filters.length) {
    parts.push(h("h3", {}, "Verdicts of the rows"), h("ul", {}, filters.map(([name, c]) =>
      h("li", {}, h("code", {}, name), ` passed ${num(c.passed)} · failed ${num(c.failed)}`))));
  }
  const reviews = Object.entries(l.review_counts || {});
  parts.push(h("h3", {}, "Review state of the rows"),
    h("p", {}, reviews.map(([status, n]) => `${status} ${num(n)}`).join(" · ") || "–",
      l.edited_rows ? ` · ${num(l.edited_rows)} edited by reviewers` : ""));
  if (l.ground_truth) parts.push(h("h3", {}, "Ground truth"), h("pre", { class: "mono" }, JSON.stringify(l.ground_truth, null, 2)));
  return parts;
}

async function loadRuns() {
  const page = await api("/v1/training-runs", { query: { dataset_id: datasetId, limit: 20 } });
  replace($("#version-runs tbody"), page.items.length ? page.items.map((run) => h("tr", {},
    h("td", {}, h("a", { href: `/ui/training/${run.id}` }, `run #${run.id}`)), h("td", {}, badge(run.status)),
    h("td", { class: "mono" }, run.student.model || "from scratch"), h("td", {}, when(run.created_at))))
    : h("tr", {}, h("td", { class: "empty" }, "No training runs on this version yet.")));
}

function renderFreeze(version) {
  const freezing = FREEZING.has(version.status);
  $("#version-freeze").hidden = version.status === "succeeded";
  replace($("#version-status"), badge(version.status));
  const total = version.rows_total;
  $("#version-progress-text").textContent = freezing
    ? (total ? `freezing: ${num(version.rows_done)} of ${num(total)} rows copied` : "waiting for a worker to freeze it…")
    : version.status === "failed" ? `the freeze failed: ${version.error || "unknown error"}` : "";
  replace($("#version-progress"), freezing ? progressBar(total ? version.rows_done / total : 0, version.status) : []);
  $("#export-download").disabled = version.status !== "succeeded";
  $("#launch-training").hidden = version.status !== "succeeded";
}

startPage(async () => {
  await requireSession();
  let version = await loadSubject(`/v1/datasets/${datasetId}`);
  const title = `${version.name} v${version.version}`;
  $("#version-title").textContent = title;
  document.title = `${title} · hardlabel`;
  renderFreeze(version);
  if (FREEZING.has(version.status)) {
    await new Promise((resolve) => {
      poll(async () => {
        version = await api(`/v1/datasets/${datasetId}`);
        renderFreeze(version);
        if (!FREEZING.has(version.status)) resolve();
      }, 1000, () => FREEZING.has(version.status));
    });
  }
  const counts = version.row_counts || {};
  facts($("#version-facts"), [
    ["Rows", num(counts.total)], ["Train", num(counts.train)], ["Test", num(counts.test)],
    ["Teacher rows", num(counts.teacher)], ["Ground-truth rows", num(counts.ground_truth)],
    ["Stage", version.lineage?.stage || version.query?.query?.stage || "–"],
    ["Created", when(version.created_at)], ["Created by", version.lineage?.created_by?.name || `#${version.created_by}`],
  ]);
  $("#version-digest").textContent = version.digest;
  replace($("#lineage"), lineage(version));
  $("#version-query").textContent = JSON.stringify(version.query, null, 2);
  if (!counts.test) $("#export-split").value = "train";
  $("#export-download").addEventListener("click", async () => {
    const status = $("#export-status");
    const query = { format: $("#export-format").value, container: $("#export-container").value, split: $("#export-split").value };
    status.textContent = "Preparing…";
    try {
      const file = await download(`/v1/datasets/${datasetId}/export`, query, `${version.name}-v${version.version}.${query.container}`);
      status.textContent = `Downloaded ${file.name} (${num(file.bytes)} bytes)`;
      showProblem(null);
    } catch (err) {
      status.textContent = "";
      showProblem(err);
    }
  });
  $("#card").closest("details").addEventListener("toggle", async (event) => {
    if (!event.target.open || $("#card").textContent) return;
    try {
      $("#card").textContent = await apiText(`/v1/datasets/${datasetId}/card`, {
        format: $("#export-format").value, container: $("#export-container").value });
    } catch (err) {
      showProblem(err);
    }
  });
  await loadRuns();
});
