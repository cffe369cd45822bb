// Job page: progress, recipe, teacher, counts and charts of its samples, shards and events (live).
import { api, hasRole, loadSubject, requireSession, showProblem, startPage } from "./api.js";
import { histogram, passFail, reviewStack } from "./charts.js";
import { $, addEvents, badge, compact, duration, facts, h, keyValues, num, poll, progressBar, replace, when } from "./dom.js";

const jobId = Number(document.body.dataset.objectId);
const LIVE = new Set(["queued", "running"]);
const EVENTS_PAGE_SIZE = 200;
const MAX_EVENT_PAGES = 50;
let job = null;
let lastEventId = 0;

// Costs are in the currency of the teacher's price: four significant digits, no symbol.
function money(value) {
  if (value === null || value === undefined) return "–";
  return Number(value.toPrecision(4)).toString();
}

function renderUsage(usage) {
  if (!usage) return;
  const { total, estimate, budget } = usage;
  const estimated = estimate
    ? `${estimate.completion_tokens_bounded ? "≤ " : "~"}${compact(estimate.completion_tokens)} completion · ~${compact(estimate.prompt_tokens)} prompt tokens` +
      (estimate.cost !== null ? ` · cost ~${money(estimate.cost)}` : "")
    : null;
  const limits = budget
    ? [budget.max_cost !== null ? `max cost ${money(budget.max_cost)}` : null,
       budget.max_completion_tokens !== null ? `max ${num(budget.max_completion_tokens)} completion tokens` : null]
      .filter(Boolean).join(" · ")
    : null;
  facts($("#job-usage"), [
    ["Cost", total.cost !== null ? money(total.cost) : "no price set"],
    ["Prompt / completion tokens", `${num(total.prompt_tokens)} / ${num(total.completion_tokens)}`],
    ["Samples/s", total.samples_per_second ? total.samples_per_second.toFixed(2) : "–"],
    ["Estimate at submission", estimated],
    budget ? ["Budget", limits + (budget.reached ? ` · reached: ${budget.reached}` : "")] : null,
  ]);
  $("#usage-note").textContent = estimate && !estimate.completion_tokens_bounded
    ? "a list stage has no max_items: the completion estimate is no bound"
    : "";
  replace($("#usage-teachers tbody"), usage.teachers.map((t) => h("tr", {},
    h("td", { class: "mono" }, `${usage.teachers.length > 1 ? `${t.index}: ` : ""}${t.model} (${t.engine})`),
    h("td", { class: "num" }, num(t.prompt_tokens)),
    h("td", { class: "num" }, num(t.completion_tokens)),
    h("td", { class: "num" }, t.samples_per_second ? t.samples_per_second.toFixed(2) : "–"),
    h("td", { class: "num" }, t.price_per_million_tokens
      ? `${t.price_per_million_tokens.input} / ${t.price_per_million_tokens.output}` : "–"),
    h("td", { class: "num" }, money(t.cost)))));
}

function renderJob(detail) {
  job = detail;
  const p = detail.progress;
  replace($("#job-status"), badge(detail.status));
  replace($("#job-bar"), progressBar(p.fraction, detail.status));
  $("#job-progress-text").textContent =
    `${num(p.items_done)} / ${num(p.items_total)} items · ${(p.fraction * 100).toFixed(1)}%` +
    (LIVE.has(detail.status) && p.eta_seconds !== null ? ` · ETA ${duration(p.eta_seconds)}` : "");
  facts($("#job-facts"), [
    ["Samples written", num(p.samples_written)],
    ["Tokens in / out", `${compact(p.tokens_in)} / ${compact(p.tokens_out)}`],
    ["Throughput", p.items_per_second ? `${p.items_per_second.toFixed(2)} items/s` : "–"],
    ["Output tokens/s", p.tokens_out_per_second ? compact(p.tokens_out_per_second) : "–"],
    ["Elapsed", duration(p.elapsed_seconds)],
    ["Created", when(detail.created_at)],
    ["Finished", detail.finished_at ? when(detail.finished_at) : "–"],
    ["Seed · priority", `${detail.seed} · ${detail.priority}`],
  ]);
  renderUsage(detail.usage);
  const error = $("#job-error");
  error.hidden = !detail.last_error;
  error.textContent = detail.last_error || "";
  $("#cancel-job").hidden = !(LIVE.has(detail.status) && hasRole("admin"));
  const several = detail.teachers.length > 1;
  $("#teacher-heading").textContent = several ? `Teachers (${detail.teachers.length})` : "Teacher";
  replace($("#teacher"), ...detail.teachers.map((teacher, index) => h("dl", { class: "facts" },
    several ? h("div", {}, h("dt", {}, "index"), h("dd", {}, String(index))) : null,
    ...Object.entries(teacher).map(([key, value]) =>
      h("div", {}, h("dt", {}, key), h("dd", { class: "mono" }, typeof value === "object" ? JSON.stringify(value) : String(value)))))));
  replace($("#shards tbody"), detail.shards.map((shard) => h("tr", {},
    h("td", { class: "mono" }, shard.id),
    h("td", {}, `${shard.start}–${shard.end}` + (several ? ` · teacher ${shard.teacher_index}` : "")),
    h("td", {}, badge(shard.status)),
    h("td", { class: "num" }, shard.cursor),
    h("td", { class: "num" }, `${shard.attempts}/${shard.max_attempts}`),
    h("td", { class: "mono" }, shard.worker_id || "–"))));
  if (!detail.shards.length) replace($("#shards tbody"), h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No shards")));
}

// Several teachers: each item's answers in one row, a column per teacher.
const SIDE_BY_SIDE_PAGE = 50;
let sideBySideOffset = 0; // items are paged by item index: an item without answers yet has no row

function answerCell(answers) {
  if (!answers.length) return h("td", { class: "empty" }, "–");
  return h("td", {}, answers.map((a) => h("div", {},
    h("a", { href: `/ui/samples/${a.sample_id}`, class: "sample-answer" }, a.answer ?? "(no answer)"),
    a.review_status !== "pending" ? h("span", { class: "hint" }, ` ${a.review_status}`) : null)));
}

async function loadSideBySide(teachers, reset) {
  if (reset) sideBySideOffset = 0;
  const page = await api(`/v1/jobs/${jobId}/answers`, { query: { offset: sideBySideOffset, limit: SIDE_BY_SIDE_PAGE } });
  const rows = page.items.map((item) => h("tr", { "data-item": item.item_index },
    h("td", { class: "num" }, item.item_index),
    h("td", {}, item.question),
    ...teachers.map((_, index) => answerCell(item.answers.filter((a) => a.teacher_index === index))),
    h("td", { class: "agree" }, item.agree === null ? "–" : item.agree ? "agree" : "differ")));
  const body = $("#side-by-side-table tbody");
  if (reset) replace(body, rows); else body.append(...rows);
  sideBySideOffset = Math.min(sideBySideOffset + SIDE_BY_SIDE_PAGE, page.total);
  const shown = body.querySelectorAll("tr").length;
  const agreeing = [...body.querySelectorAll("td.agree")].filter((td) => td.textContent === "agree").length;
  $("#side-by-side-note").textContent = `${num(shown)} of ${num(page.total)} items · ${num(agreeing)} agree (normalised)`;
  $("#side-by-side-more").hidden = sideBySideOffset >= page.total;
}

function renderSideBySideHead(teachers) {
  replace($("#side-by-side-table thead"), h("tr", {}, h("th", { class: "num" }, "Item"), h("th", {}, "Question"),
    ...teachers.map((t, index) => h("th", {}, `${index}: ${t.model}`)), h("th", {}, "Teachers")));
  $("#side-by-side").hidden = false;
}

async function renderRecipe(recipeRef) {
  const recipe = await api(`/v1/recipes/${recipeRef.id}`);
  const stages = Array.isArray(recipe.spec.stages) ? recipe.spec.stages : [];
  replace($("#recipe"),
    h("p", {}, h("strong", {}, `${recipe.name} v${recipe.version}`), " ",
      h("span", { class: "hint digest", title: recipe.digest }, recipe.digest.slice(0, 12))),
    recipe.spec.description ? h("p", { class: "hint" }, recipe.spec.description) : null,
    h("table", { class: "table compact" },
      h("thead", {}, h("tr", {}, h("th", {}, "Stage"), h("th", {}, "Parser"), h("th", {}, "Sampling"))),
      h("tbody", {}, stages.map((stage) => h("tr", {},
        h("td", {}, h("a", { href: `/ui/samples?job_id=${jobId}&stage=${encodeURIComponent(stage.name)}` }, stage.name),
          stage.judges ? h("span", { class: "hint" }, ` judges ${stage.judges}`) : null),
        h("td", {}, stage.parser?.type || "text"),
        h("td", { class: "mono" }, Object.entries(stage.sampling || {}).map(([k, v]) => `${k}=${v}`).join(" ")))))),
    h("details", {}, h("summary", { class: "hint" }, "Recipe document"), h("pre", { class: "mono" }, JSON.stringify(recipe.spec, null, 2))));
}

async function loadEvents() {
  // Every page after the last event seen, so a long history still ends with its newest events.
  for (let i = 0; i < MAX_EVENT_PAGES; i++) {
    const page = await api(`/v1/jobs/${jobId}/events`, { query: { after: lastEventId || undefined, limit: EVENTS_PAGE_SIZE } });
    addEvents($("#events"), page.items);
    for (const event of page.items) lastEventId = Math.max(lastEventId, event.id);
    if (page.items.length < EVENTS_PAGE_SIZE) break;
  }
}

async function loadStats() {
  const stats = await api("/v1/stats/samples", { query: { job_id: jobId } });
  const prefix = stats.estimated ? "≈ " : "";
  $("#counts-note").textContent = stats.estimated
    ? `estimated from a sample of ${num(stats.rows_examined)} rows (over ${num(stats.exact_limit)} samples)`
    : `${num(stats.matched)} samples`;
  const stages = Object.entries(stats.stages);
  replace($("#counts-stage"), stages.length
    ? h("table", { class: "table compact" }, h("tbody", {}, stages.map(([stage, n]) => h("tr", {},
      h("td", {}, h("a", { href: `/ui/samples?job_id=${jobId}&stage=${encodeURIComponent(stage)}` }, stage)),
      h("td", { class: "num" }, `${prefix}${num(n)}`)))))
    : h("p", { class: "empty" }, "No samples yet"));
  reviewStack($("#chart-review"), stats.review, { estimated: stats.estimated });
  passFail($("#chart-filters"), stats.filters);
  histogram($("#chart-length"), stats.answer_chars, { label: "answer length histogram", emptyText: "No answers yet" });
  histogram($("#chart-score"), stats.scores, { label: "judge score histogram", emptyText: "No judge scores (no judge stage ran)" });
}

function countsRow(label, counts, link) {
  return h("tr", {}, h("td", {}, link ? h("a", { href: link }, label) : label),
    ["accepted", "rejected", "pending", "total"].map((k) => h("td", { class: "num" }, num(counts[k]))));
}

async function exactSummary() {
  const summary = await api("/v1/samples/summary", { query: { job_id: jobId } });
  const base = `/ui/samples?job_id=${jobId}&stage=${encodeURIComponent(summary.stage)}`;
  const rows = [countsRow(`all (${summary.stage})`, summary.review, base)];
  for (const [name, outcome] of Object.entries(summary.filters)) {
    rows.push(countsRow(`passed ${name}`, outcome.passed, `${base}&passed=${encodeURIComponent(name)}`));
    rows.push(countsRow(`failed ${name}`, outcome.failed, `${base}&failed=${encodeURIComponent(name)}`));
  }
  rows.push(countsRow("passed every filter", summary.passed_all), countsRow("failed any filter", summary.failed_any),
    countsRow("not filtered", summary.unfiltered));
  const box = $("#exact-summary");
  replace(box, h("h3", {}, "Exact review summary"), h("table", { class: "table compact" },
    h("thead", {}, h("tr", {}, h("th", {}, "Samples"), ["Accepted", "Rejected", "Pending", "Total"].map((t) => h("th", { class: "num" }, t)))),
    h("tbody", {}, rows)));
  box.hidden = false;
}

startPage(async () => {
  await requireSession();
  const detail = await loadSubject(`/v1/jobs/${jobId}`);
  document.title = `Job ${jobId} · hardlabel`;
  renderJob(detail);
  const several = detail.teachers.length > 1;
  if (several) {
    renderSideBySideHead(detail.teachers);
    $("#side-by-side-more").addEventListener("click", () => loadSideBySide(detail.teachers, false).catch(showProblem));
  }
  await Promise.all([renderRecipe(detail.recipe), loadEvents(), loadStats(),
    several ? loadSideBySide(detail.teachers, true) : null]);
  $("#exact-counts").addEventListener("click", () => exactSummary().catch(showProblem));
  $("#cancel-job").addEventListener("click", async () => {
    if (!confirm(`Cancel job ${jobId}? Workers stop within one chunk; samples written so far stay.`)) return;
    try { renderJob(await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" })); } catch (err) { showProblem(err); }
  });
  let ticks = 0;
  poll(async () => {
    renderJob(await api(`/v1/jobs/${jobId}`));
    await loadEvents();
    if (++ticks % 5 === 0 || !LIVE.has(job.status)) {
      await loadStats();
      if (several && sideBySideOffset <= SIDE_BY_SIDE_PAGE) await loadSideBySide(job.teachers, true);
    }
  }, 2000, () => LIVE.has(job.status));
});
