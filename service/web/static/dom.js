// Building DOM nodes and formatting values. Text always goes in as text nodes (never innerHTML),
// so teacher output and user input cannot inject markup.

export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function badge(status, extraClass = "") {
  return h("span", { class: `badge ${status} ${extraClass}`.trim(), dataset: { status } }, status);
}

export function progressBar(fraction, status) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  const cls = status === "succeeded" ? "bar done" : status === "failed" ? "bar failed" : "bar";
  return h("div", { class: cls, role: "progressbar", "aria-valuenow": pct.toFixed(0) },
    h("span", { style: `width:${pct.toFixed(1)}%` }));
}

const numberFormat = new Intl.NumberFormat("en-US");
export function num(value) {
  if (value === null || value === undefined) return "–";
  return numberFormat.format(value);
}

export function compact(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${(value / 1e9).toFixed(digits)}B`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(digits)}M`;
  if (abs >= 1e4) return `${(value / 1e3).toFixed(digits)}k`;
  if (Number.isInteger(value)) return String(value);
  return value.toPrecision(3);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return "< 1 s";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${m % 60} min`;
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  const seconds = (Date.now() - date.getTime()) / 1000;
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return date.toLocaleString();
}

export function clock(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
}

export function facts(container, pairs) {
  replace(container, pairs.filter(Boolean).map(([label, value]) =>
    h("div", {}, h("dt", {}, label), h("dd", {}, value ?? "–"))));
}

export function keyValues(object) {
  const dl = h("dl", { class: "kv" });
  for (const [key, value] of Object.entries(object || {})) {
    const shown = value !== null && typeof value === "object" ? JSON.stringify(value) : String(value ?? "null");
    dl.append(h("dt", {}, key), h("dd", {}, shown));
  }
  return dl;
}

// Add `events` (oldest first, as the API lists them) to a timeline that shows the newest on top:
// the latest event is in sight without scrolling the box, however long the history.
export function addEvents(list, events) {
  if (events.length) list.querySelector("li.empty")?.remove();
  for (const event of events) {
    list.prepend(h("li", { dataset: { eventId: event.id } }, h("time", { title: event.created_at }, clock(event.created_at)),
      h("span", { class: "kind" }, event.kind), h("span", {}, event.message)));
  }
  if (!list.children.length) list.append(h("li", { class: "empty" }, "No events yet"));
}

let toastTimer = null;

// One short status message at a time at the bottom of the page (a newer one replaces it).
export function toast(message, ms = 2200) {
  let node = document.querySelector(".toast");
  if (!node) {
    node = h("div", { class: "toast", role: "status" });
    document.body.append(node);
  }
  node.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => node.remove(), ms);
}

export function shortDigest(digest) {
  return digest ? `${digest.slice(0, 12)}…` : "–";
}

// Call `fn` every `ms` milliseconds (a number, or a function giving the next delay) while
// `keepGoing()` holds; skipped while the tab is hidden. Returns a function that stops it.
export function poll(fn, ms, keepGoing = () => true) {
  let timer = null;
  const delay = () => (typeof ms === "function" ? ms() : ms);
  const tick = async () => {
    timer = null;
    if (!keepGoing()) return;
    if (!document.hidden) {
      try { await fn(); } catch (err) { console.warn("poll failed", err); }
    }
    if (keepGoing()) timer = setTimeout(tick, delay());
  };
  timer = setTimeout(tick, delay());
  return () => { if (timer) clearTimeout(timer); };
}
