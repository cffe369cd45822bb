// Keyboard review of the sample on screen: one key per action, inline forms for edit, tag and note.
import { api, hasRole, showProblem } from "./api.js";
import { $, h, toast } from "./dom.js";

function typingIn(target) {
  return target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

function currentText(sample, field) {
  const edited = sample[`edited_${field}`];
  return edited !== null && edited !== undefined ? edited : sample[`teacher_${field}`] ?? "";
}

export class KeyboardReview {
  /**
   * @param {object} hooks
   *   container: the element the sample is rendered in (inline forms go at its top);
   *   sample(): the sample on screen (or null); show(sample): re-render after a change;
   *   next(), previous(): move; afterVerdict(): what accept/reject do next (default next()).
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.busy = false;
    // Keys run one after another, in the order pressed, even while a request is in flight.
    this.queue = Promise.resolve();
    document.addEventListener("keydown", (event) => this.onKey(event));
  }

  canReview() {
    if (hasRole("reviewer")) return true;
    showProblem("Reviewing needs a reviewer or admin token; this one is a viewer's.");
    return false;
  }

  async patch(body, message) {
    const sample = this.hooks.sample();
    if (!sample || this.busy || !this.canReview()) return null;
    this.busy = true;
    try {
      const updated = await api(`/v1/samples/${sample.id}`, { method: "PATCH", body });
      showProblem(null);
      this.hooks.show(updated);
      if (message) toast(message);
      return updated;
    } catch (err) {
      showProblem(err);
      return null;
    } finally {
      this.busy = false;
    }
  }

  async verdict(action) {
    const updated = await this.patch({ action }, { accept: "Accepted", reject: "Rejected", reset: "Reset to pending" }[action]);
    if (updated && action !== "reset") await (this.hooks.afterVerdict || this.hooks.next)();
  }

  closeForms() {
    for (const form of this.hooks.container.querySelectorAll(".inline-form")) form.remove();
  }

  openForm(form, focus) {
    this.closeForms();
    const head = this.hooks.container.querySelector(".sample-head");
    head.after(form);
    focus.focus();
    if (focus.setSelectionRange) focus.setSelectionRange(focus.value.length, focus.value.length);
  }

  edit() {
    const sample = this.hooks.sample();
    if (!sample || !this.canReview()) return;
    const question = h("textarea", { id: "edit-question", rows: 3 });
    question.value = currentText(sample, "question");
    const answer = h("textarea", { id: "edit-answer", rows: 6 });
    answer.value = currentText(sample, "answer");
    const save = async () => {
      const body = {};
      if (question.value !== currentText(sample, "question") && question.value.trim()) body.question = question.value;
      if (answer.value !== currentText(sample, "answer") && answer.value.trim()) body.answer = answer.value;
      if (!Object.keys(body).length) { this.closeForms(); return; }
      await this.patch(body, "Saved as a revision (the teacher's text is kept)");
    };
    const form = this.inlineForm("edit-form", "Edit (saved as a revision; the teacher's original is kept)", [
      h("label", { for: "edit-question" }, "Question"), question,
      h("label", { for: "edit-answer" }, "Answer"), answer,
    ], save, "Ctrl+Enter saves · Esc cancels");
    this.openForm(form, answer);
  }

  tag() {
    const sample = this.hooks.sample();
    if (!sample || !this.canReview()) return;
    const input = h("input", { id: "tag-input", type: "text", placeholder: "name adds · -name removes · separate with spaces" });
    const save = async () => {
      const words = input.value.split(/[\s,]+/).filter(Boolean);
      const body = {
        tags_add: words.filter((w) => !w.startsWith("-")),
        tags_remove: words.filter((w) => w.startsWith("-")).map((w) => w.slice(1)).filter(Boolean),
      };
      if (!body.tags_add.length && !body.tags_remove.length) { this.closeForms(); return; }
      await this.patch(body, "Tags saved");
    };
    const form = this.inlineForm("tag-form", `Tags (now: ${sample.tags.join(", ") || "none"})`, [input], save, "Enter saves · Esc cancels", true);
    this.openForm(form, input);
  }

  note() {
    const sample = this.hooks.sample();
    if (!sample || !this.canReview()) return;
    const text = h("textarea", { id: "note-input", rows: 3 });
    text.value = sample.note || "";
    const save = () => this.patch({ note: text.value.trim() ? text.value : null }, text.value.trim() ? "Note saved" : "Note cleared");
    const form = this.inlineForm("note-form", "Note", [text], save, "Ctrl+Enter saves (empty clears) · Esc cancels");
    this.openForm(form, text);
  }

  inlineForm(id, title, fields, save, help, enterSaves = false) {
    const form = h("form", { class: "inline-form", id },
      h("strong", {}, title), ...fields,
      h("div", { class: "row" }, h("button", { type: "submit", class: "primary small" }, "Save"),
        h("button", { type: "button", class: "small", onclick: () => this.closeForms() }, "Cancel"),
        h("span", { class: "hint" }, help)));
    form.addEventListener("submit", (event) => { event.preventDefault(); save(); });
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") { event.preventDefault(); this.closeForms(); }
      else if (event.key === "Enter" && (event.ctrlKey || event.metaKey || enterSaves)) { event.preventDefault(); save(); }
      event.stopPropagation();
    });
    return form;
  }

  toggleHelp() {
    const dialog = $("#help-dialog");
    if (dialog.open) dialog.close(); else dialog.showModal();
  }

  onKey(event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (typingIn(event.target)) return;
    if (document.querySelector("dialog[open]") && event.key !== "?") return;
    const actions = {
      j: () => this.hooks.next(), ArrowDown: () => this.hooks.next(),
      k: () => this.hooks.previous(), ArrowUp: () => this.hooks.previous(),
      a: () => this.verdict("accept"), r: () => this.verdict("reject"), u: () => this.verdict("reset"),
      e: () => this.edit(), t: () => this.tag(), n: () => this.note(),
      o: () => { const s = this.hooks.sample(); if (s) location.assign(`/ui/samples/${s.id}`); },
      "/": () => { const search = $("#search"); if (search) search.focus(); },
      "?": () => this.toggleHelp(),
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    this.queue = this.queue.then(action).catch(showProblem);
  }
}
