// Jobs list: status, progress bars, throughput and ETA, refreshed while any job is live.
import { api, requireSession, showProblem, startPage } from "./api.js";
import { $, badge, compact, duration, h, num, poll, progressBar, replace, when } from "./dom.js";

const PAGE_SIZE = 20;
const LIVE = new Set(["queued", "running"]);
const recipeNames = new Map();
let live = false;

function state() {
  const params = new URLSearchParams(location.search);
  return { status: params.get("status") || "", offset: Math.max(0, parseInt(params.get("offset") || "0", 10) || 0) };
}

function navigate(next) {
  const params = new URLSearchParams();
  if (next.status) params.set("status", next.status);
  if (next.offset) params.set("offset", String(next.offset));
  history.pushState(null, "", `/ui/jobs${params.size ? `?${params}` : ""}`);
  load();
}

async function recipeName(id) {
  if (!recipeNames.has(id)) {
    recipeNames.set(id, api(`/v1/recipes/${id}`).then((r) => `${r.name} v${r.version}`).catch(() => `recipe ${id}`));
  }
  return recipeNames.get(id);
}

function throughput(progress) {
  if (!progress.items_per_second) return "–";
  const tokens = progress.tokens_out_per_second ? ` · ${compact(progress.tokens_out_per_second)} tok/s` : "";
  return `${progress.items_per_second.toFixed(progress.items_per_second < 10 ? 2 : 0)} items/s${tokens}`;
}

function row(job) {
  const p = job.progress;
  const recipeCell = h("td", {}, `recipe ${job.recipe_id}`);
  recipeName(job.recipe_id).then((name) => { recipeCell.textContent = name; });
  const eta = LIVE.has(job.status) ? duration(p.eta_seconds) : "–";
  return h("tr", { dataset: { jobId: job.id } },
    h("td", {}, h("a", { href: `/ui/jobs/${job.id}`, class: "job-link" }, `#${job.id}`)),
    h("td", {}, badge(job.status)),
    recipeCell,
    h("td", { class: "mono" }, job.teacher.model || job.teacher.base_url || "–"),
    h("td", {}, h("div", { class: "progress-cell" }, progressBar(p.fraction, job.status),
      h("small", {}, `${num(p.items_done)} / ${num(p.items_total)} items · ${(p.fraction * 100).toFixed(0)}%`))),
    h("td", { class: "num" }, num(p.samples_written)),
    h("td", { class: "num" }, throughput(p)),
    h("td", { class: "num" }, eta),
    h("td", { title: job.created_at }, when(job.created_at)),
  );
}

async function load() {
  const { status, offset } = state();
  $("#status-filter").value = status;
  const page = await api("/v1/jobs", { query: { status, limit: PAGE_SIZE, offset } });
  const body = $("#jobs-table tbody");
  if (!page.items.length) {
    replace(body, h("tr", {}, h("td", { colspan: 9, class: "empty" },
      status ? `No ${status} jobs.` : "No jobs yet. Submit one with `hardlabel submit RECIPE --teacher MODEL`.")));
  } else {
    replace(body, page.items.map(row));
  }
  live = page.items.some((job) => LIVE.has(job.status));
  $("#live").hidden = !live;
  const pager = $("#pager");
  replace(pager,
    h("button", { type: "button", disabled: offset === 0, onclick: () => navigate({ status, offset: Math.max(0, offset - PAGE_SIZE) }) }, "‹ Newer"),
    h("span", {}, page.total ? `${offset + 1}–${offset + page.items.length} of ${num(page.total)}` : ""),
    h("button", { type: "button", disabled: offset + PAGE_SIZE >= page.total, onclick: () => navigate({ status, offset: offset + PAGE_SIZE }) }, "Older ›"));
  showProblem(null);
}

startPage(async () => {
  await requireSession();
  $("#status-filter").addEventListener("change", (e) => navigate({ status: e.target.value, offset: 0 }));
  window.addEventListener("popstate", load);
  await load();
  // Fast while a job is live; a page opened while nothing ran still picks up new jobs, less often.
  poll(load, () => (live ? 2000 : 15000));
});
