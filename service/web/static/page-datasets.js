// Curate: freeze a dataset version from a query (row count and split previewed before confirming),
// and list versions with lineage and digest.
import { api, hasRole, requireSession, showProblem, startPage } from "./api.js";
import { $, badge, h, num, replace, shortDigest, when } from "./dom.js";

const PAGE_SIZE = 20;
// Samples-query conditions a dataset query has no equivalent for (they are left out, and said so).
const NOT_CARRIED = {
  q: "text search", failed: "failed filters", score_min: "minimum score", score_max: "maximum score",
  parse_status: "parse status", reviewer: "reviewer",
};

function words(value) {
  return (value || "").split(/[\s,]+/).map((w) => w.trim()).filter(Boolean);
}

function prefill(params) {
  const form = $("#version-form");
  const set = (name, value) => { if (value) form.elements.namedItem(name).value = value; };
  set("job_ids", params.get("job_id") || params.get("job_ids"));
  set("stage", params.get("stage"));
  set("require_passed", params.get("passed"));
  set("tags", params.get("tag"));
  const statuses = words(params.get("review_status")).sort().join(",");
  const select = form.elements.namedItem("review_status");
  const known = [...select.options].map((o) => o.value);
  if (statuses && known.includes(statuses)) select.value = statuses;
  const jobs = words(params.get("job_id"));
  if (!form.elements.namedItem("name").value && jobs.length) {
    form.elements.namedItem("name").value = `job-${jobs[0]}-${select.value === "accepted" ? "accepted" : "curated"}`;
  }
  const dropped = Object.entries(NOT_CARRIED).filter(([key]) => params.get(key)).map(([key, label]) => `${label} (${params.get(key)})`);
  if (statuses && !known.includes(statuses)) dropped.push(`review status ${statuses}`);
  const notice = $("#dropped-conditions");
  notice.hidden = !dropped.length;
  notice.textContent = dropped.length
    ? `A dataset version cannot select by ${dropped.join(", ")}: those conditions are left out. ` +
      "To keep exactly this selection, tag it with bulk review in Samples and require the tag here."
    : "";
  const described = [...params.entries()].filter(([k]) => k !== "new" && k !== "cursor").map(([k, v]) => `${k}=${v}`);
  $("#source-query").textContent = described.length ? `from the samples query ${described.join(" · ")}` : "";
}

function requestBody() {
  const form = $("#version-form");
  const value = (name) => form.elements.namedItem(name).value.trim();
  const number = (text) => (text !== "" && !Number.isNaN(Number(text)) ? Number(text) : text);
  const statuses = value("review_status");
  const query = {
    job_ids: words(value("job_ids")).map(number),
    review_status: statuses === "accepted_or_unreviewed_passed_all" ? statuses : statuses.split(","),
    require_passed: words(value("require_passed")),
    tags: words(value("tags")),
    exclude_tags: words(value("exclude_tags")),
  };
  if (value("stage")) query.stage = value("stage");
  if (value("limit")) query.limit = number(value("limit"));
  const body = { name: value("name"), query };
  const fraction = value("test_fraction");
  if (fraction && Number(fraction) !== 0) {
    body.split = { test_fraction: number(fraction), seed: number(value("seed") || "0"),
      stratify_by_job: form.elements.namedItem("stratify_by_job").checked };
  }
  if (value("system")) body.system = form.elements.namedItem("system").value;
  return body;
}

let previewed = null;

async function preview() {
  const body = requestBody();
  const result = await api("/v1/stats/dataset-preview", { method: "POST", body });
  previewed = { body: JSON.stringify(body), result };
  const about = result.exact ? "" : "≈ ";
  $("#preview-rows").textContent = `${about}${num(result.rows)}`;
  $("#preview-train").textContent = `${about}${num(result.train)}`;
  $("#preview-test").textContent = `${about}${num(result.test)}`;
  $("#preview-stage").textContent = result.stage;
  $("#preview-jobs").textContent = Object.keys(result.by_job).length
    ? `Rows per job: ${Object.entries(result.by_job).map(([job, n]) => `job ${job}: ${num(n)}`).join(", ")}`
    : "Estimated: counting every row took too long.";
  $("#preview").hidden = false;
  $("#create-version").disabled = result.rows === 0;
  $("#create-needs-admin").hidden = hasRole("admin");
  showProblem(null);
}

function confirmDialog(title, text) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

async function create() {
  const body = requestBody();
  if (!previewed || previewed.body !== JSON.stringify(body)) await preview();
  const { result } = previewed;
  const ok = await confirmDialog(`Create “${body.name}” with ${num(result.rows)} rows?`,
    `${num(result.train)} train and ${num(result.test)} test rows from stage ${result.stage}. ` +
    "A worker copies the rows' text now: later edits to the samples do not change this version.");
  if (!ok) return;
  const version = await api("/v1/datasets", { method: "POST", body });
  location.assign(`/ui/datasets/${version.id}`);
}

function versionRow(version) {
  const counts = version.row_counts || {};
  const jobs = (version.query?.query?.job_ids || []);
  return h("tr", { dataset: { datasetId: version.id } },
    h("td", {}, h("a", { href: `/ui/datasets/${version.id}` }, `${version.name} v${version.version}`),
      version.status === "succeeded" ? "" : [" ", badge(version.status)]),
    h("td", { class: "num" }, num(counts.total)),
    h("td", { class: "num" }, `${num(counts.train)} / ${num(counts.test)}`),
    h("td", {}, jobs.map((id, i) => [i ? ", " : "", h("a", { href: `/ui/jobs/${id}` }, `#${id}`)])),
    h("td", { class: "digest", title: version.digest }, shortDigest(version.digest)),
    h("td", { title: version.created_at }, when(version.created_at)),
    h("td", {}, h("a", { href: `/ui/datasets/${version.id}` }, "export · lineage →")));
}

async function loadVersions() {
  const offset = Math.max(0, parseInt(new URLSearchParams(location.search).get("offset") || "0", 10) || 0);
  const page = await api("/v1/datasets", { query: { limit: PAGE_SIZE, offset } });
  replace($("#versions tbody"), page.items.length ? page.items.map(versionRow)
    : h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No versions yet: freeze one from a samples query.")));
  const go = (to) => { const p = new URLSearchParams(location.search); p.set("offset", String(to)); location.search = p; };
  replace($("#pager"),
    h("button", { type: "button", disabled: offset === 0, onclick: () => go(Math.max(0, offset - PAGE_SIZE)) }, "‹ Newer"),
    h("span", {}, page.total ? `${offset + 1}–${offset + page.items.length} of ${num(page.total)}` : ""),
    h("button", { type: "button", disabled: offset + PAGE_SIZE >= page.total, onclick: () => go(offset + PAGE_SIZE) }, "Older ›"));
}

startPage(async () => {
  await requireSession();
  const params = new URLSearchParams(location.search);
  const section = $("#new-version");
  if (params.get("new")) {
    section.hidden = false;
    prefill(params);
  }
  $("#show-new-version").addEventListener("click", () => { section.hidden = false; $("#version-form [name=name]").focus(); });
  $("#version-form").addEventListener("input", () => { $("#preview").hidden = true; });
  $("#version-form").addEventListener("submit", (event) => { event.preventDefault(); preview().catch(showProblem); });
  $("#preview-version").addEventListener("click", () => preview().catch(showProblem));
  $("#create-version").addEventListener("click", () => create().catch(showProblem));
  await loadVersions();
});
