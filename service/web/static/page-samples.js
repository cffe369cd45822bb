// Samples browser: filters in the URL, keyset pages (next/prev), one sample in full, keyboard
// review, bulk review by query with a count, charts over the query.
import { api, showProblem, startPage, requireSession } from "./api.js";
import { histogram, passFail, reviewStack } from "./charts.js";
import { $, badge, h, num, replace, toast } from "./dom.js";
import { KeyboardReview } from "./review-keys.js";
import { renderSample } from "./sample-view.js";

const PAGE_SIZE = 25;
const FIELDS = ["job_id", "stage", "q", "review_status", "passed", "failed", "tag", "score_min", "score_max", "parse_status", "reviewer"];
const LISTS = new Set(["review_status", "passed", "failed", "tag"]);
const NUMBERS = new Set(["job_id", "score_min", "score_max", "reviewer"]);
const STATS_OPEN_KEY = "hardlabel.statsOpen";

let items = [];
let current = -1;
let nextCursor = null;
const details = new Map();
let selectSeq = 0;

// The filters as they are in the URL (strings; lists comma-joined).
function urlQuery() {
  const params = new URLSearchParams(location.search);
  const query = {};
  for (const field of FIELDS) {
    const values = params.getAll(field).flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
    if (values.length) query[field] = LISTS.has(field) ? values.join(",") : values[0];
  }
  return query;
}

function cursor() {
  return new URLSearchParams(location.search).get("cursor") || "";
}

function prevStack() {
  return (history.state && Array.isArray(history.state.prev)) ? history.state.prev : [];
}

function pageUrl(query, pageCursor) {
  const params = new URLSearchParams();
  for (const field of FIELDS) if (query[field]) params.set(field, query[field]);
  if (pageCursor) params.set("cursor", pageCursor);
  return `/ui/samples${params.size ? `?${params}` : ""}`;
}

function fillForm(query) {
  const form = $("#filters");
  for (const field of FIELDS) {
    if (field === "review_status") continue;
    const input = form.elements.namedItem(field);
    if (input) input.value = query[field] || "";
  }
  const statuses = new Set((query.review_status || "").split(",").filter(Boolean));
  for (const box of form.querySelectorAll("input[name=review_status]")) box.checked = statuses.has(box.value);
}

function formQuery() {
  const form = $("#filters");
  const query = {};
  for (const field of FIELDS) {
    if (field === "review_status") continue;
    const input = form.elements.namedItem(field);
    const value = input ? input.value.trim() : "";
    if (value) query[field] = value;
  }
  const statuses = [...form.querySelectorAll("input[name=review_status]:checked")].map((b) => b.value);
  if (statuses.length) query.review_status = statuses.join(",");
  return query;
}

// The query as a JSON body (POST /v1/samples/review): typed values, lists as arrays.
function bodyQuery(query) {
  const body = {};
  for (const [field, value] of Object.entries(query)) {
    if (LISTS.has(field)) body[field] = value.split(",").filter(Boolean);
    else if (NUMBERS.has(field) && value.trim() !== "" && !Number.isNaN(Number(value))) body[field] = Number(value);
    else body[field] = value;
  }
  return body;
}

function describe(query) {
  const parts = [];
  if (query.job_id) parts.push(`job ${query.job_id}`);
  if (query.stage) parts.push(`stage ${query.stage}`);
  if (query.q) parts.push(`text “${query.q}”`);
  if (query.review_status) parts.push(`review ${query.review_status.replaceAll(",", " or ")}`);
  if (query.passed) parts.push(`passed ${query.passed}`);
  if (query.failed) parts.push(`failed ${query.failed}`);
  if (query.tag) parts.push(`tagged ${query.tag}`);
  if (query.score_min || query.score_max) parts.push(`score ${query.score_min || "…"}–${query.score_max || "…"}`);
  if (query.parse_status) parts.push(`parse ${query.parse_status}`);
  if (query.reviewer) parts.push(`reviewed by #${query.reviewer}`);
  return parts.length ? parts.join(", ") : "no filter (every sample)";
}

function snippet(text) {
  return (text ?? "").replace(/\s+/g, " ").slice(0, 160);
}

function listItem(sample, index) {
  return h("li", { dataset: { sampleId: sample.id, index }, onclick: () => select(index) },
    h("span", { class: "sid" }, `#${sample.id}`),
    h("span", { class: "meta" }, sample.edited_answer !== null || sample.edited_question !== null ? h("span", { class: "badge tag" }, "edited") : null,
      " ", badge(sample.review_status)),
    h("span", { class: "snippet" }, snippet(sample.question)),
    h("span", { class: "answer-snippet" }, snippet(sample.answer ?? sample.raw_text)));
}

function renderList() {
  const list = $("#sample-list");
  if (!items.length) {
    replace(list, h("li", { class: "empty" }, "No samples match this query."));
  } else {
    replace(list, items.map(listItem));
  }
  const stack = prevStack();
  $("#prev-page").disabled = !stack.length;
  $("#next-page").disabled = !nextCursor;
  const first = stack.length * PAGE_SIZE;
  $("#page-label").textContent = items.length ? `${num(first + 1)}–${num(first + items.length)}` : "";
}

function updateListItem(sample) {
  const index = items.findIndex((s) => s.id === sample.id);
  if (index < 0) return;
  items[index] = sample;
  const old = $(`#sample-list li[data-sample-id="${sample.id}"]`);
  if (old) {
    const fresh = listItem(sample, index);
    if (index === current) fresh.classList.add("current");
    old.replaceWith(fresh);
  }
}

async function select(index) {
  if (index < 0 || index >= items.length) return;
  current = index;
  for (const li of document.querySelectorAll("#sample-list li")) {
    li.classList.toggle("current", Number(li.dataset.index) === index);
  }
  const li = $(`#sample-list li[data-index="${index}"]`);
  if (li) li.scrollIntoView({ block: "nearest" });
  const sample = items[index];
  history.replaceState(history.state, "", `${location.pathname}${location.search}#sample-${sample.id}`);
  const container = $("#sample-detail");
  const seq = ++selectSeq;
  if (!details.has(sample.id)) {
    renderSample(container, { ...sample, verdicts: [], revisions: [], provenance: {}, inputs: {} });
    container.classList.add("loading");
    try {
      details.set(sample.id, await api(`/v1/samples/${sample.id}`));
    } catch (err) {
      showProblem(err);
      return;
    } finally {
      container.classList.remove("loading");
    }
  }
  if (seq === selectSeq) renderSample(container, details.get(sample.id));
}

async function load({ focusLast = false } = {}) {
  const query = urlQuery();
  fillForm(query);
  $("#freeze-version").href = `/ui/datasets?${new URLSearchParams({ ...query, new: "1" })}`;
  details.clear();
  try {
    const page = await api("/v1/samples", { query: { ...query, cursor: cursor() || undefined, limit: PAGE_SIZE } });
    items = page.items;
    nextCursor = page.next_cursor;
    showProblem(null);
  } catch (err) {
    items = [];
    nextCursor = null;
    renderList();
    replace($("#sample-detail"), h("p", { class: "empty" }, "No samples to show: fix the query above."));
    throw err;
  }
  renderList();
  if (!items.length) {
    replace($("#sample-detail"), h("p", { class: "empty" }, "Nothing matches. Widen the filters or clear them."));
    return;
  }
  const wanted = /^#sample-(\d+)$/.exec(location.hash);
  const fromHash = wanted ? items.findIndex((s) => s.id === Number(wanted[1])) : -1;
  await select(fromHash >= 0 ? fromHash : focusLast ? items.length - 1 : 0);
  if ($("#stats-panel").open) loadStats().catch(showProblem);
}

async function goNext() {
  if (!nextCursor) return;
  history.pushState({ prev: [...prevStack(), cursor()] }, "", pageUrl(urlQuery(), nextCursor));
  await load();
}

async function goPrevious({ focusLast = false } = {}) {
  const stack = prevStack();
  if (!stack.length) return;
  const previousCursor = stack[stack.length - 1];
  history.pushState({ prev: stack.slice(0, -1) }, "", pageUrl(urlQuery(), previousCursor));
  await load({ focusLast });
}

async function next() {
  if (current < items.length - 1) await select(current + 1);
  else if (nextCursor) await goNext();
  else toast("That was the last sample of this query.");
}

async function previous() {
  if (current > 0) await select(current - 1);
  else if (prevStack().length) await goPrevious({ focusLast: true });
  else toast("This is the first sample.");
}

async function loadStats() {
  const query = urlQuery();
  const stats = await api("/v1/stats/samples", { query });
  const prefix = stats.estimated ? "≈ " : "";
  $("#match-count").textContent = `${prefix}${num(stats.matched)} matching`;
  $("#stats-note").textContent = stats.estimated ? `(estimated from a sample of ${num(stats.rows_examined)} rows)` : "";
  reviewStack($("#chart-review"), stats.review, { estimated: stats.estimated });
  passFail($("#chart-filters"), stats.filters);
  histogram($("#chart-length"), stats.answer_chars, { label: "answer length histogram", emptyText: "No answers" });
  histogram($("#chart-score"), stats.scores, { label: "judge score histogram", emptyText: "No judge scores" });
}

function confirmDialog(title, text, okLabel) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

async function bulk(action) {
  const query = urlQuery();
  if (!Object.keys(query).length) {
    showProblem("Bulk review needs at least one filter: narrow the query first (reviewing every sample at once is refused).");
    return;
  }
  const counted = await api("/v1/stats/samples/count", { query });
  const verb = action === "accept" ? "Accept" : "Reject";
  const about = counted.exact ? "" : "about ";
  const ok = await confirmDialog(`${verb} ${about}${num(counted.count)} samples?`,
    `Every sample matching ${describe(query)} — ${about}${num(counted.count)} samples — will be marked ${action}ed, ` +
    "recorded with your token and the time.", `${verb} ${about}${num(counted.count)}`);
  if (!ok) return;
  const result = await api("/v1/samples/review", { method: "POST", body: { query: bodyQuery(query), action } });
  toast(`${verb}ed: ${num(result.changed)} changed of ${num(result.matched)} matching`, 4000);
  await load();
}

startPage(async () => {
  await requireSession();
  new KeyboardReview({
    container: $("#sample-detail"),
    sample: () => (current >= 0 && items[current] ? details.get(items[current].id) || items[current] : null),
    show: (sample) => {
      details.set(sample.id, sample);
      updateListItem(sample);
      if (items[current] && items[current].id === sample.id) renderSample($("#sample-detail"), sample);
    },
    next,
    previous,
  });
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    history.pushState({ prev: [] }, "", pageUrl(formQuery(), ""));
    load().catch(showProblem);
  });
  $("#prev-page").addEventListener("click", () => goPrevious().catch(showProblem));
  $("#next-page").addEventListener("click", () => goNext().catch(showProblem));
  $("#bulk-accept").addEventListener("click", () => bulk("accept").catch(showProblem));
  $("#bulk-reject").addEventListener("click", () => bulk("reject").catch(showProblem));
  const panel = $("#stats-panel");
  panel.open = localStorage.getItem(STATS_OPEN_KEY) === "1";
  panel.addEventListener("toggle", () => {
    localStorage.setItem(STATS_OPEN_KEY, panel.open ? "1" : "0");
    if (panel.open) loadStats().catch(showProblem);
  });
  window.addEventListener("popstate", () => load().catch(showProblem));
  await load();
});
