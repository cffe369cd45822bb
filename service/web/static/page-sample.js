// One sample on its own page (a shareable link), with the same review keys as the browser.
import { loadSubject, requireSession, startPage } from "./api.js";
import { $, toast } from "./dom.js";
import { KeyboardReview } from "./review-keys.js";
import { renderSample } from "./sample-view.js";

const sampleId = Number(document.body.dataset.objectId);
let sample = null;

function show(updated) {
  sample = updated;
  renderSample($("#sample-detail"), sample, { standalone: true });
  $("#back-to-list").href = `/ui/samples?job_id=${sample.job_id}#sample-${sample.id}`;
}

startPage(async () => {
  await requireSession();
  show(await loadSubject(`/v1/samples/${sampleId}`));
  const browse = () => toast("Open the samples list (top left) to move between samples.");
  new KeyboardReview({
    container: $("#sample-detail"),
    sample: () => sample,
    show,
    next: browse,
    previous: browse,
    afterVerdict: () => {},
  });
});
