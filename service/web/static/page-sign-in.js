// Sign-in: check the token against /v1/me, keep it in sessionStorage, go back where the user was.
import { ApiError, showProblem, signIn, storedToken } from "./api.js";
import { $ } from "./dom.js";

const REASONS = {
  expired: "Your token is no longer accepted (unknown, revoked or expired): sign in again.",
  "signed-out": "Sign in with an API token to continue.",
};

function nextPage(params) {
  const next = params.get("next") || "";
  // Only pages of this UI: never an open redirect to another site.
  return next.startsWith("/ui/") && !next.startsWith("//") ? next : "/ui/jobs";
}

const params = new URLSearchParams(location.search);
const reason = params.get("reason");
if (reason && REASONS[reason]) {
  const notice = $("#sign-in-notice");
  notice.textContent = REASONS[reason];
  notice.hidden = false;
}
if (storedToken() && !reason) location.replace(nextPage(params));

$("#sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("#token").value.trim();
  if (!token) return;
  const button = $("#sign-in-button");
  button.disabled = true;
  showProblem(null);
  // The notice was about the token this tab had before; from here on only this attempt's outcome counts.
  $("#sign-in-notice").hidden = true;
  try {
    await signIn(token);
    location.assign(nextPage(params));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      showProblem(new ApiError(401, { title: "Sign-in failed", detail: `${err.problem.detail || "the token is not valid"}` }));
    } else {
      showProblem(err);
    }
    button.disabled = false;
    $("#token").select();
  }
});
