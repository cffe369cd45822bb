// One sample in full: question, answer (teacher's original beside any edit), verdicts with reasons,
// tags, note, revisions, provenance.
import { badge, h, keyValues, num, replace, when } from "./dom.js";
import { nameTokens, tokenName } from "./token-names.js";

function textBlock(label, teacherText, editedText, { field, missing = "(empty)" } = {}) {
  const shown = (text) => h("pre", { class: "text" }, text === null || text === undefined ? missing : text);
  if (editedText === null || editedText === undefined) {
    return h("section", { class: "text-block", dataset: { field } },
      h("div", { class: "label" }, label), h("div", { class: `current-${field}` }, shown(teacherText)));
  }
  return h("section", { class: "text-block", dataset: { field } },
    h("div", { class: "label" }, label, h("span", { class: "badge tag" }, "edited")),
    h("div", { class: "compare" },
      h("div", { class: "original" }, h("div", { class: "hint" }, "Teacher's original"), shown(teacherText)),
      h("div", { class: `edited current-${field}` }, h("div", { class: "hint" }, "Edited"), shown(editedText))));
}

function verdictList(verdicts) {
  if (!verdicts.length) return h("p", { class: "hint" }, "No filter has judged this sample.");
  return h("ul", { class: "verdicts" }, verdicts.map((v) => h("li", { dataset: { filter: v.filter_name } },
    h("span", { class: "fname" }, v.filter_name),
    badge(v.passed ? "pass" : "fail"),
    h("span", {}, v.reason, v.score !== null ? h("span", { class: "hint" }, ` (score ${score(v.score)})`) : null))));
}

function revisionList(revisions) {
  return h("ol", { class: "timeline revisions" }, revisions.map((r) => h("li", {},
    h("time", { title: r.created_at }, when(r.created_at)),
    h("span", { class: "kind" }, `${r.field} by `, tokenName(r.edited_by)),
    h("span", {}, `“${short(r.old_text)}” → “${short(r.new_text)}”`))));
}

function score(value) {
  return Number.isInteger(value) ? String(value) : String(+value.toPrecision(3));
}

function short(text) {
  if (text === null || text === undefined) return "(none)";
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

export function renderSample(container, sample, { standalone = false } = {}) {
  const head = h("div", { class: "sample-head" },
    standalone ? h("span", { class: "title" }, `Sample #${sample.id}`)
      : h("a", { class: "title", href: `/ui/samples/${sample.id}` }, `Sample #${sample.id}`),
    h("span", { class: "review-status" }, badge(sample.review_status)),
    sample.parse_status !== "ok" ? badge("failed", "parse") : null,
    h("span", { class: "hint" }, "job ", h("a", { href: `/ui/jobs/${sample.job_id}` }, `#${sample.job_id}`),
      ` · stage ${sample.stage} · item ${sample.item_index}`, sample.sample_index ? ` · sample ${sample.sample_index}` : ""),
    sample.score !== null ? h("span", { class: "hint" }, `judge score ${score(sample.score)}`) : null,
    h("span", { class: "spacer" }),
    h("span", { class: "tags" }, sample.tags.map((tag) => h("span", { class: "badge tag" }, tag))),
    sample.reviewed_at ? h("span", { class: "hint reviewed-by" }, "reviewed by ", tokenName(sample.reviewed_by), ` ${when(sample.reviewed_at)}`) : null);
  const parts = [head,
    textBlock("Question", sample.teacher_question, sample.edited_question, { field: "question" }),
    textBlock("Answer", sample.teacher_answer, sample.edited_answer,
      { field: "answer", missing: `(no parsed answer: ${sample.parse_error || "the parser failed"})` })];
  if (sample.note) {
    parts.push(h("section", { class: "text-block note" }, h("div", { class: "label" }, "Note"), h("pre", { class: "text" }, sample.note)));
  }
  if (sample.raw_text !== (sample.teacher_answer ?? "")) {
    parts.push(h("details", { class: "text-block" }, h("summary", { class: "hint" }, "Raw teacher completion"), h("pre", { class: "text" }, sample.raw_text)));
  }
  parts.push(h("section", { class: "text-block" }, h("div", { class: "label" }, `Filter verdicts (${sample.verdicts?.length ?? 0})`),
    verdictList(sample.verdicts || [])));
  if (sample.revisions?.length) {
    parts.push(h("section", { class: "text-block" }, h("div", { class: "label" }, `Revisions (${num(sample.revisions.length)})`),
      revisionList(sample.revisions)));
  }
  parts.push(h("details", { class: "text-block provenance", open: standalone },
    h("summary", { class: "hint" }, "Provenance and seed inputs"),
    h("div", { class: "grid two" }, h("div", {}, h("h3", {}, "Provenance"), keyValues(sample.provenance)),
      h("div", {}, h("h3", {}, "Inputs"), keyValues(sample.inputs)))));
  replace(container, parts);
  container.dataset.sampleId = sample.id;
  nameTokens(container);
}
