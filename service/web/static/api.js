// The UI's only way to data: the /v1 REST API with the bearer token kept in sessionStorage.
import { $, h, replace } from "./dom.js";

const TOKEN_KEY = "hardlabel.token";
const ROLE_RANK = { viewer: 0, reviewer: 1, admin: 2 };

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  const here = location.pathname + location.search;
  const params = new URLSearchParams();
  if (reason) params.set("reason", reason);
  if (!here.startsWith("/ui/sign-in")) params.set("next", here);
  location.assign(`/ui/sign-in?${params}`);
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(describeProblem(status, problem));
    this.status = status;
    this.problem = problem || {};
  }
}

// A problem+json body as one or more readable lines: the title, the detail, and each field error.
export function describeProblem(status, problem) {
  if (!problem || typeof problem !== "object") return `The server answered ${status}.`;
  const lines = [];
  const title = problem.title || `Error ${status}`;
  lines.push(problem.detail ? `${title}: ${problem.detail}` : title);
  const errors = Array.isArray(problem.errors) ? problem.errors : [];
  if (errors.length > 1) {
    for (const e of errors) lines.push(`• ${e.field || "request"}: ${e.msg}`);
  }
  return lines.join("\n");
}

function urlFor(path, query) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) {
      if (value.length) url.searchParams.set(key, value.join(","));
    } else {
      url.searchParams.set(key, String(value));
    }
  }
  return url;
}

async function send(path, { method = "GET", query, body, token = storedToken(), accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(urlFor(path, query), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, {
      title: "The server does not answer",
      detail: "Check that hardlabel is running and reachable, then reload the page.",
    });
  }
  if (!response.ok) {
    let problem = null;
    try { problem = await response.json(); } catch (err) { problem = null; }
    throw new ApiError(response.status, problem);
  }
  return response;
}

// Calls the API and returns the parsed JSON. A 401 (unknown, revoked or expired token) signs out.
export async function api(path, options = {}) {
  try {
    const response = await send(path, options);
    return response.status === 204 ? null : await response.json();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401 && !options.noSignOut) {
      signOut("expired");
    }
    throw err;
  }
}

// Calls the API for a text body (e.g. a dataset card in Markdown).
export async function apiText(path, query) {
  try {
    return await (await send(path, { query, accept: "text/plain, text/markdown" })).text();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut("expired");
    throw err;
  }
}

// Downloads a response as a file (an <a href> cannot carry the Authorization header).
export async function download(path, query, fallbackName) {
  const response = await send(path, { query, accept: "*/*" });
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: match ? match[1] : fallbackName });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return { name: match ? match[1] : fallbackName, bytes: blob.size };
}

export function showProblem(err, container = $("#problem")) {
  if (!container) return;
  if (!err) {
    container.hidden = true;
    replace(container);
    return;
  }
  // A string is a message for the user as it is; an ApiError reads its problem; anything else is a bug.
  const message = typeof err === "string" ? err
    : err instanceof ApiError ? err.message : `Something went wrong in the page: ${err.message || err}`;
  const [first, ...rest] = message.split("\n");
  replace(container, h("strong", {}, first), rest.length ? rest.join("\n") : null);
  container.hidden = false;
  if (typeof err !== "string" && !(err instanceof ApiError)) console.error(err);
}

// The object a page is about (a job, a run, a version, a sample). When it does not exist the page
// shows only the API's "… does not exist" problem: no empty cards, no controls that lead nowhere.
export async function loadSubject(path) {
  try {
    return await api(path);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      const content = $("#page-content");
      if (content) content.hidden = true;
    }
    throw err;
  }
}

let currentIdentity = null;

export function identity() {
  return currentIdentity;
}

export function hasRole(minimum) {
  return !!currentIdentity && ROLE_RANK[currentIdentity.role] >= ROLE_RANK[minimum];
}

// Every page but sign-in starts here: no token → sign-in page; otherwise learn who we are and
// reveal what the role allows.
export async function requireSession() {
  if (!storedToken()) {
    signOut("signed-out");
    throw new Error("not signed in");
  }
  currentIdentity = await api("/v1/me");
  document.body.dataset.role = currentIdentity.role;
  const who = $("#who");
  if (who) {
    $("#who-name").textContent = currentIdentity.name;
    $("#who-role").textContent = currentIdentity.role;
    $("#sign-out").addEventListener("click", () => signOut("signed-out"));
    who.hidden = false;
  }
  return currentIdentity;
}

export async function signIn(token) {
  const me = await api("/v1/me", { token, noSignOut: true });
  sessionStorage.setItem(TOKEN_KEY, token);
  return me;
}

// Runs a page's start function and shows any failure as a readable message in the page.
export function startPage(start) {
  const run = async () => {
    try {
      await start();
    } catch (err) {
      if (err && err.message === "not signed in") return;
      showProblem(err);
    }
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run);
  else run();
  window.addEventListener("unhandledrejection", (event) => showProblem(event.reason));
}
