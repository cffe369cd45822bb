// One training run: status and progress, the live loss curve (and eval loss), checkpoints, the
// student-vs-teacher table, every scored item (filtered, paged), hyper-parameters and events.
import { api, hasRole, loadSubject, requireSession, showProblem, startPage } from "./api.js";
import { lineChart } from "./charts.js";
import { $, addEvents, badge, compact, duration, facts, h, keyValues, num, poll, progressBar, replace } from "./dom.js";

const runId = Number(document.body.dataset.objectId);
const LIVE = new Set(["queued", "running"]);
const MAX_METRIC_PAGES = 100;
const EVENTS_PAGE_SIZE = 200;
const MAX_EVENT_PAGES = 50;
const ITEMS_PAGE_SIZE = 20;
const ITEM_FILTERS = new Set(["all", "disagreements", "student_wrong", "teacher_wrong"]);
const EMPTY_ITEMS = {
  all: "No scored items yet: they appear when the evaluation has finished.",
  disagreements: "Teacher and trained student agree on every item.",
  student_wrong: "The trained student answered every item correctly.",
  teacher_wrong: "The teacher answered every item correctly.",
};
const metrics = new Map();
let run = null;
let lastEventId = 0;

function renderRun(detail) {
  run = detail;
  const p = detail.progress;
  replace($("#run-status"), badge(detail.status));
  replace($("#run-bar"), progressBar(p.fraction, detail.status));
  $("#run-progress-text").textContent = `step ${num(p.step)}${p.total_steps ? ` / ${num(p.total_steps)}` : ""}` +
    (LIVE.has(detail.status) && p.eta_seconds !== null ? ` · ETA ${duration(p.eta_seconds)}` : "");
  facts($("#run-facts"), [
    ["Phase", p.phase || detail.status],
    ["Dataset", h("a", { href: `/ui/datasets/${detail.dataset.id}` }, `${detail.dataset.name} v${detail.dataset.version}`)],
    ["Student", detail.student.model || "from scratch"],
    ["Method", detail.method],
    ["Tokens/s", p.tokens_per_second ? compact(p.tokens_per_second) : "–"],
    ["Steps/s", p.steps_per_second ? p.steps_per_second.toFixed(2) : "–"],
    ["Elapsed", duration(p.elapsed_seconds)],
    ["Attempts", num(detail.attempts)],
  ]);
  const error = $("#run-error");
  error.hidden = !detail.last_error;
  error.textContent = detail.last_error || "";
  $("#cancel-run").hidden = !(LIVE.has(detail.status) && hasRole("admin"));
  replace($("#checkpoints"), detail.checkpoints.length ? detail.checkpoints.map((c) => h("li", {}, c))
    : h("li", { class: "hint" }, "No checkpoint yet"));
  $("#model-path").textContent = detail.model_path || "(when training ends)";
  replace($("#config"), keyValues(detail.config));
  renderEvaluation(detail.results, detail.status);
}

function pct(score) {
  return score ? `${(score.accuracy * 100).toFixed(1)}%` : "–";
}

// The student/teacher ratio, or why there is none: pending while the run may still score it.
function ratioText(results, status) {
  if (results.ratio !== null && results.ratio !== undefined) {
    return `Student reaches ${(results.ratio * 100).toFixed(1)}% of the teacher's accuracy`;
  }
  if (LIVE.has(status)) return "Ratio: pending";
  if (!results.teacher) return "Ratio: n/a (the teacher was not scored)";
  if (!results.student_after) return "Ratio: n/a (the trained student was not scored)";
  if (results.teacher.accuracy === 0) return "Ratio: n/a (teacher scored 0)";
  return "Ratio: n/a";
}

function renderEvaluation(results, status) {
  const box = $("#evaluation");
  if (!results) {
    replace(box, h("p", { class: "hint" }, "Scored after training: teacher, student before and after, on the same items."));
    return;
  }
  const rows = [["Teacher", results.teacher], ["Student before training", results.student_before],
    ["Student after training", results.student_after]];
  replace(box,
    h("table", { class: "table compact eval-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", { class: "num" }, "Correct"), h("th", { class: "num" }, "Accuracy"))),
      h("tbody", {}, rows.map(([label, score]) => h("tr", {},
        h("td", {}, label, score ? h("div", { class: "hint mono" }, score.model) : null),
        h("td", { class: "num" }, score ? `${num(score.correct)} / ${num(score.items)}` : "–"),
        h("td", { class: "num" }, pct(score)))))),
    h("p", {}, h("strong", { id: "ratio" }, ratioText(results, status)),
    h("span", { class: "hint" }, ` · ${num(results.items)} items from ${results.source}, scored ${results.scorer}`)));
}

// The filter and page live in the URL (?items=…&items_offset=…), so a view of the items can be shared.
function itemsState() {
  const params = new URLSearchParams(location.search);
  const filter = params.get("items");
  return {
    filter: ITEM_FILTERS.has(filter) ? filter : "all",
    offset: Math.max(0, parseInt(params.get("items_offset") || "0", 10) || 0),
  };
}

function setItemsState({ filter, offset }) {
  const params = new URLSearchParams(location.search);
  if (filter === "all") params.delete("items"); else params.set("items", filter);
  if (offset) params.set("items_offset", String(offset)); else params.delete("items_offset");
  const query = params.toString();
  history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
  return loadItems();
}

function answerCell(answer) {
  if (!answer) return h("td", { class: "hint" }, "–");
  return h("td", { class: `answer ${answer.correct ? "right" : "wrong"}`, dataset: { correct: String(answer.correct) } },
    h("span", { class: `badge ${answer.correct ? "pass" : "fail"}` }, answer.correct ? "✓" : "✗"), " ",
    h("span", { class: "mono" }, answer.answer || "(empty)"));
}

async function loadItems() {
  const { filter, offset } = itemsState();
  $("#eval-items-filter").value = filter;
  const page = await api(`/v1/training-runs/${runId}/evaluation/items`,
    { query: { filter, limit: ITEMS_PAGE_SIZE, offset } });
  const body = $("#eval-items");
  if (!page.items.length) {
    replace(body, h("tr", {}, h("td", { colspan: "6", class: "empty hint" }, EMPTY_ITEMS[filter])));
  } else {
    replace(body, page.items.map((item) => h("tr", { dataset: { index: String(item.index) }, class: item.disagreement ? "disagreement" : null },
      h("td", { class: "num" }, num(item.index)),
      h("td", {}, item.question),
      h("td", { class: "mono" }, item.reference),
      answerCell(item.teacher), answerCell(item.student_before), answerCell(item.student_after))));
  }
  replace($("#eval-items-pager"),
    h("button", { type: "button", id: "eval-items-previous", disabled: offset === 0,
      onclick: () => setItemsState({ filter, offset: Math.max(0, offset - ITEMS_PAGE_SIZE) }).catch(showProblem) }, "‹ Previous"),
    h("span", { id: "eval-items-range" }, page.total
      ? `${num(offset + 1)}–${num(offset + page.items.length)} of ${num(page.total)}` : ""),
    h("button", { type: "button", id: "eval-items-next", disabled: offset + ITEMS_PAGE_SIZE >= page.total,
      onclick: () => setItemsState({ filter, offset: offset + ITEMS_PAGE_SIZE }).catch(showProblem) }, "Next ›"));
}

async function loadMetrics() {
  let after = metrics.size ? Math.max(...metrics.keys()) : undefined;
  for (let i = 0; i < MAX_METRIC_PAGES; i++) {
    const page = await api(`/v1/training-runs/${runId}/metrics`, { query: { after_step: after, limit: 200 } });
    for (const m of page.items) metrics.set(m.step, m);
    if (!page.items.length || page.items.length >= page.total) break;
    after = page.items[page.items.length - 1].step;
  }
  drawLoss();
}

function thin(points, max = 1500) {
  if (points.length <= max) return points;
  const every = Math.ceil(points.length / max);
  return points.filter((_, i) => i % every === 0 || i === points.length - 1);
}

function drawLoss() {
  const rows = [...metrics.values()].sort((a, b) => a.step - b.step);
  const loss = thin(rows.filter((m) => m.loss !== null).map((m) => [m.step, m.loss]));
  const evalLoss = thin(rows.filter((m) => m.eval_loss !== null).map((m) => [m.step, m.eval_loss]));
  lineChart($("#loss-chart"), [
    { name: "loss", label: "training loss", points: loss },
    { name: "eval_loss", label: "eval loss", points: evalLoss },
  ], { xLabel: "step", yLabel: "loss", emptyText: "No logged steps yet" });
  const last = rows[rows.length - 1];
  $("#loss-note").textContent = last
    ? `step ${num(last.step)}: loss ${last.loss?.toFixed(4) ?? "–"}${last.eval_loss !== null ? ` · eval ${last.eval_loss.toFixed(4)}` : ""}`
    : "";
}

async function loadEvents() {
  // Every page after the last event seen, so a long history still ends with its newest events.
  for (let i = 0; i < MAX_EVENT_PAGES; i++) {
    const page = await api(`/v1/training-runs/${runId}/events`, { query: { after: lastEventId || undefined, limit: EVENTS_PAGE_SIZE } });
    addEvents($("#events"), page.items);
    for (const event of page.items) lastEventId = Math.max(lastEventId, event.id);
    if (page.items.length < EVENTS_PAGE_SIZE) break;
  }
}

startPage(async () => {
  await requireSession();
  renderRun(await loadSubject(`/v1/training-runs/${runId}`));
  document.title = `Training run ${runId} · hardlabel`;
  await Promise.all([loadMetrics(), loadEvents(), loadItems()]);
  window.addEventListener("resize", drawLoss);
  $("#eval-items-filter").addEventListener("change", (e) => setItemsState({ filter: e.target.value, offset: 0 }).catch(showProblem));
  $("#cancel-run").addEventListener("click", async () => {
    if (!confirm(`Cancel training run ${runId}? The worker stops the training process; checkpoints stay on disk.`)) return;
    try { renderRun(await api(`/v1/training-runs/${runId}/cancel`, { method: "POST" })); } catch (err) { showProblem(err); }
  });
  poll(async () => {
    renderRun(await api(`/v1/training-runs/${runId}`));
    await Promise.all([loadMetrics(), loadEvents()]);
    if (!LIVE.has(run.status)) await loadItems();  // the items are stored as the run ends
  }, 3000, () => LIVE.has(run.status));
});
