// One training run: status and progress, the live loss curve (and eval loss), checkpoints, the
// student-vs-teacher table, hyper-parameters and events.
import { api, hasRole, requireSession, showProblem, startPage } from "./api.js";
import { lineChart } from "./charts.js";
import { $, badge, clock, compact, duration, facts, h, keyValues, num, poll, progressBar, replace } from "./dom.js";

const runId = Number(document.body.dataset.objectId);
const LIVE = new Set(["queued", "running"]);
const MAX_METRIC_PAGES = 100;
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
  renderEvaluation(detail.results);
}

function pct(score) {
  return score ? `${(score.accuracy * 100).toFixed(1)}%` : "–";
}

function renderEvaluation(results) {
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
    h("p", {}, h("strong", {}, results.ratio !== null && results.ratio !== undefined
      ? `Student reaches ${(results.ratio * 100).toFixed(1)}% of the teacher's accuracy` : "Ratio: pending"),
    h("span", { class: "hint" }, ` · ${num(results.items)} items from ${results.source}, scored ${results.scorer}`)));
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
  const page = await api(`/v1/training-runs/${runId}/events`, { query: { after: lastEventId || undefined, limit: 200 } });
  const list = $("#events");
  for (const event of page.items) {
    list.append(h("li", {}, h("time", { title: event.created_at }, clock(event.created_at)),
      h("span", { class: "kind" }, event.kind), h("span", {}, event.message)));
    lastEventId = Math.max(lastEventId, event.id);
  }
  if (!list.children.length) list.append(h("li", { class: "empty" }, "No events yet"));
}

startPage(async () => {
  await requireSession();
  renderRun(await api(`/v1/training-runs/${runId}`));
  document.title = `Training run ${runId} · hardlabel`;
  await Promise.all([loadMetrics(), loadEvents()]);
  window.addEventListener("resize", drawLoss);
  $("#cancel-run").addEventListener("click", async () => {
    if (!confirm(`Cancel training run ${runId}? The worker stops the training process; checkpoints stay on disk.`)) return;
    try { renderRun(await api(`/v1/training-runs/${runId}/cancel`, { method: "POST" })); } catch (err) { showProblem(err); }
  });
  poll(async () => {
    renderRun(await api(`/v1/training-runs/${runId}`));
    await Promise.all([loadMetrics(), loadEvents()]);
  }, 3000, () => LIVE.has(run.status));
});
