// Training runs: list with live progress, and (admins) a form to launch a run on a dataset version.
import { api, hasRole, requireSession, showProblem, startPage } from "./api.js";
import { $, badge, compact, duration, h, num, poll, progressBar, replace, when } from "./dom.js";

const PAGE_SIZE = 20;
const LIVE = new Set(["queued", "running"]);
const datasetNames = new Map();
let live = false;

function state() {
  const params = new URLSearchParams(location.search);
  return { status: params.get("status") || "", offset: Math.max(0, parseInt(params.get("offset") || "0", 10) || 0) };
}

function navigate(next) {
  const params = new URLSearchParams();
  if (next.status) params.set("status", next.status);
  if (next.offset) params.set("offset", String(next.offset));
  history.pushState(null, "", `/ui/training${params.size ? `?${params}` : ""}`);
  load().catch(showProblem);
}

function datasetName(id) {
  if (!datasetNames.has(id)) {
    datasetNames.set(id, api(`/v1/datasets/${id}`).then((d) => `${d.name} v${d.version}`).catch(() => `dataset ${id}`));
  }
  return datasetNames.get(id);
}

function row(run) {
  const p = run.progress;
  const datasetCell = h("td", {}, h("a", { href: `/ui/datasets/${run.dataset_id}` }, `dataset ${run.dataset_id}`));
  datasetName(run.dataset_id).then((name) => { datasetCell.firstChild.textContent = name; });
  return h("tr", { dataset: { runId: run.id } },
    h("td", {}, h("a", { href: `/ui/training/${run.id}`, class: "run-link" }, `#${run.id}`)),
    h("td", {}, badge(run.status)),
    datasetCell,
    h("td", { class: "mono" }, run.student.model || "from scratch"),
    h("td", {}, run.method),
    h("td", {}, h("div", { class: "progress-cell" }, progressBar(p.fraction, run.status),
      h("small", {}, `step ${num(p.step)}${p.total_steps ? ` / ${num(p.total_steps)}` : ""}${p.phase && LIVE.has(run.status) ? ` · ${p.phase}` : ""}`))),
    h("td", { class: "num" }, p.tokens_per_second ? compact(p.tokens_per_second) : "–"),
    h("td", { class: "num" }, LIVE.has(run.status) ? duration(p.eta_seconds) : "–"),
    h("td", { title: run.created_at }, when(run.created_at)));
}

async function load() {
  const { status, offset } = state();
  $("#status-filter").value = status;
  const page = await api("/v1/training-runs", { query: { status, limit: PAGE_SIZE, offset } });
  replace($("#runs tbody"), page.items.length ? page.items.map(row)
    : h("tr", {}, h("td", { colspan: 9, class: "empty" }, status ? `No ${status} runs.` : "No training runs yet.")));
  live = page.items.some((run) => LIVE.has(run.status));
  $("#live").hidden = !live;
  replace($("#pager"),
    h("button", { type: "button", disabled: offset === 0, onclick: () => navigate({ status, offset: Math.max(0, offset - PAGE_SIZE) }) }, "‹ Newer"),
    h("span", {}, page.total ? `${offset + 1}–${offset + page.items.length} of ${num(page.total)}` : ""),
    h("button", { type: "button", disabled: offset + PAGE_SIZE >= page.total, onclick: () => navigate({ status, offset: offset + PAGE_SIZE }) }, "Older ›"));
}

async function fillDatasets() {
  const select = $("#launch-form [name=dataset_id]");
  const page = await api("/v1/datasets", { query: { limit: 100 } });
  replace(select, h("option", { value: "" }, page.items.length ? "choose a version…" : "no versions yet"),
    page.items.map((d) => h("option", { value: d.id }, `${d.name} v${d.version} — ${num(d.row_counts.total)} rows`)));
  const wanted = new URLSearchParams(location.search).get("dataset_id");
  if (wanted) select.value = wanted;
}

function launchBody() {
  const form = $("#launch-form");
  const value = (name) => form.elements.namedItem(name).value.trim();
  const number = (text) => (text !== "" && !Number.isNaN(Number(text)) ? Number(text) : text);
  const hyperparameters = {};
  for (const name of ["learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "max_length",
    "eval_split", "logging_steps", "save_steps", "seed"]) {
    if (value(name) !== "") hyperparameters[name] = number(value(name));
  }
  hyperparameters.packing = form.elements.namedItem("packing").checked;
  const model = value("student_model");
  return {
    dataset_id: number(value("dataset_id")),
    student: model ? { model } : { from_scratch: {} },
    method: value("method"),
    hyperparameters,
    evaluation: { enabled: form.elements.namedItem("evaluate").checked, scorer: value("scorer"),
      max_items: number(value("max_items") || "200") },
  };
}

startPage(async () => {
  await requireSession();
  $("#status-filter").addEventListener("change", (e) => navigate({ status: e.target.value, offset: 0 }));
  window.addEventListener("popstate", () => load().catch(showProblem));
  const launch = $("#launch");
  const openLaunch = async () => {
    launch.hidden = false;
    await fillDatasets();
  };
  if (hasRole("admin")) {
    $("#show-launch").addEventListener("click", () => openLaunch().catch(showProblem));
    if (location.hash === "#launch") await openLaunch();
    $("#launch-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const run = await api("/v1/training-runs", { method: "POST", body: launchBody() });
        location.assign(`/ui/training/${run.id}`);
      } catch (err) {
        showProblem(err);
      }
    });
  }
  await load();
  poll(() => load(), () => (live ? 3000 : 15000));
});
