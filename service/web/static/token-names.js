// Token ids (a sample's reviewer, a revision's editor) shown as the tokens' names.
import { api } from "./api.js";
import { h } from "./dom.js";

const MAX_PAGES = 20;
let names = new Map();
let loading = null;
let loadedAt = 0;

async function fetchNames() {
  const fresh = new Map();
  let offset = 0;
  for (let i = 0; i < MAX_PAGES; i++) {
    const page = await api("/v1/token-names", { query: { offset } });
    for (const token of page.items) fresh.set(token.token_id, token.name);
    offset += page.items.length;
    if (!page.items.length || offset >= page.total) break;
  }
  names = fresh;
  loadedAt = Date.now();
}

// The names, fetched once per page; again (at most every 10 s) when an id is not among them,
// e.g. a token made after the page loaded.
function ensureNames(ids) {
  const missing = ids.some((id) => !names.has(id));
  if (!loading || (missing && Date.now() - loadedAt > 10_000)) {
    loading = fetchNames().catch((err) => { loading = null; throw err; });
  }
  return loading;
}

// A token shown by name: the name at once when known, else `#id` until the names arrive.
export function tokenName(id) {
  if (id === null || id === undefined) return h("span", { class: "token-name" }, "?");
  return h("span", { class: "token-name", dataset: { tokenId: id } }, names.get(id) ?? `#${id}`);
}

// Fill in every token name inside `container` (a failure leaves the `#id`s: names are a nicety).
export async function nameTokens(container) {
  const spans = [...container.querySelectorAll(".token-name[data-token-id]")];
  if (!spans.length) return;
  const ids = spans.map((span) => Number(span.dataset.tokenId));
  try {
    await ensureNames(ids);
  } catch (err) {
    console.warn("token names unavailable", err);
    return;
  }
  for (const span of spans) {
    const name = names.get(Number(span.dataset.tokenId));
    if (name) span.textContent = name;
  }
}
