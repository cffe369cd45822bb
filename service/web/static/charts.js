// Small hand-written SVG charts: histograms, pass/fail bars, a review stack and line charts.
import { compact, h, num, replace } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Charts are drawn at the container's size, so text stays at its CSS size at any width.
function widthOf(container, fallback) {
  return Math.max(240, Math.round(container.clientWidth || fallback));
}

function svgRoot(width, height, label) {
  return s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart" });
}

// About `count` round tick values covering [lo, hi].
export function niceTicks(lo, hi, count = 5, { integer = false } = {}) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi === lo) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((c) => c >= raw) || raw;
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function empty(container, message) {
  replace(container, h("p", { class: "empty" }, message));
}

function fmtEdge(value) {
  return Number.isInteger(value) ? compact(value) : String(+value.toPrecision(3));
}

// Vertical bars; buckets are [{lo, hi, count}].
export function histogram(container, buckets, { label = "histogram", emptyText = "No data" } = {}) {
  if (!buckets || !buckets.length || buckets.every((b) => !b.count)) return empty(container, emptyText);
  const W = widthOf(container, 360), H = 170, left = 40, right = 8, top = 8, bottom = 26;
  const plotW = W - left - right, plotH = H - top - bottom;
  const max = Math.max(...buckets.map((b) => b.count));
  const svg = svgRoot(W, H, label);
  const ticks = niceTicks(0, max, 4, { integer: true });
  for (const t of ticks) {
    const y = top + plotH - (t / max) * plotH;
    svg.append(s("line", { class: "grid-line", x1: left, x2: W - right, y1: y, y2: y }));
    svg.append(s("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, compact(t)));
  }
  const barW = plotW / buckets.length;
  buckets.forEach((b, i) => {
    const barH = max ? (b.count / max) * plotH : 0;
    const rect = s("rect", {
      class: "bar-rect", x: left + i * barW + 1, y: top + plotH - barH, width: Math.max(barW - 2, 1), height: barH,
      "data-count": b.count,
    });
    const range = b.hi - b.lo === 1 && Number.isInteger(b.lo) ? fmtEdge(b.lo) : `${fmtEdge(b.lo)} – ${fmtEdge(b.hi)}`;
    rect.append(s("title", {}, `${range}: ${num(b.count)}`));
    svg.append(rect);
  });
  svg.append(s("line", { class: "axis", x1: left, x2: W - right, y1: top + plotH, y2: top + plotH }));
  // Whole-number bars (a 1–10 judge score) are labelled by their value; ranges by their edges.
  const discrete = buckets.every((b) => b.hi - b.lo === 1 && Number.isInteger(b.lo));
  if (discrete) {
    buckets.forEach((b, i) => {
      svg.append(s("text", { x: left + (i + 0.5) * barW, y: H - 8, "text-anchor": "middle" }, fmtEdge(b.lo)));
    });
  } else {
    const labelEvery = Math.ceil(buckets.length / 5);
    buckets.forEach((b, i) => {
      if (i % labelEvery === 0) {
        svg.append(s("text", { x: left + i * barW, y: H - 8, "text-anchor": "start" }, fmtEdge(b.lo)));
      }
    });
    const last = buckets[buckets.length - 1];
    svg.append(s("text", { x: W - right, y: H - 8, "text-anchor": "end" }, fmtEdge(last.hi)));
  }
  replace(container, svg);
}

// One horizontal bar per filter: passed (green) then failed (red).
export function passFail(container, filters, { emptyText = "No filter has judged these samples" } = {}) {
  const names = Object.keys(filters || {});
  if (!names.length) return empty(container, emptyText);
  const rowH = 26, W = widthOf(container, 360), labelW = 110, right = 70;
  const H = names.length * rowH + 4;
  const svg = svgRoot(W, H, "pass and fail per filter");
  const max = Math.max(...names.map((n) => filters[n].passed + filters[n].failed), 1);
  names.forEach((name, i) => {
    const { passed, failed } = filters[name];
    const y = i * rowH + 4;
    const scale = (W - labelW - right) / max;
    svg.append(s("text", { x: 0, y: y + 13, class: "filter-name" }, name.length > 16 ? `${name.slice(0, 15)}…` : name));
    const pw = passed * scale, fw = failed * scale;
    const pass = s("rect", { class: "pass", x: labelW, y, width: pw, height: 16, rx: 2, "data-count": passed });
    pass.append(s("title", {}, `${name}: ${num(passed)} passed`));
    const fail = s("rect", { class: "fail", x: labelW + pw, y, width: fw, height: 16, rx: 2, "data-count": failed });
    fail.append(s("title", {}, `${name}: ${num(failed)} failed`));
    svg.append(pass, fail);
    svg.append(s("text", { x: labelW + pw + fw + 6, y: y + 13 }, `${compact(passed)} / ${compact(failed)}`));
  });
  replace(container, svg, h("div", { class: "chart-legend" },
    h("span", {}, h("i", { style: "background:#69db7c;height:10px" }), "passed"),
    h("span", {}, h("i", { style: "background:#ff8787;height:10px" }), "failed")));
}

// Review progress: one stacked bar of accepted / rejected / pending, with the counts.
export function reviewStack(container, counts, { estimated = false } = {}) {
  const parts = ["accepted", "rejected", "pending"];
  const total = parts.reduce((sum, k) => sum + (counts?.[k] || 0), 0);
  if (!total) return empty(container, "No samples");
  const W = widthOf(container, 360), H = 18;
  const svg = svgRoot(W, H, "review progress");
  let x = 0;
  for (const key of parts) {
    const w = ((counts[key] || 0) / total) * W;
    const rect = s("rect", { class: `stack-${key}`, x, y: 0, width: w, height: H, "data-count": counts[key] || 0,
      fill: { accepted: "#51cf66", rejected: "#ff6b6b", pending: "#ced4da" }[key] });
    rect.append(s("title", {}, `${key}: ${num(counts[key] || 0)}`));
    svg.append(rect);
    x += w;
  }
  const reviewed = (counts.accepted || 0) + (counts.rejected || 0);
  const prefix = estimated ? "≈ " : "";
  replace(container, svg,
    h("div", { class: "stack-legend" }, parts.map((key) =>
      h("span", { dataset: { status: key } }, h("i", { class: key }), `${key} ${prefix}${num(counts[key] || 0)}`))),
    h("p", { class: "hint" }, `${prefix}${((reviewed / total) * 100).toFixed(1)}% reviewed`));
}

// Lines over a shared x axis. series: [{name, label, points: [[x, y], ...]}]; paths get the class
// `series-<name>` and carry their point count in data-points.
export function lineChart(container, series, { xLabel = "step", yLabel = "", emptyText = "No points yet" } = {}) {
  const withPoints = series.filter((line) => line.points.length);
  if (!withPoints.length) return empty(container, emptyText);
  const W = widthOf(container, 720), H = 300, left = 56, right = 16, top = 12, bottom = 34;
  const plotW = W - left - right, plotH = H - top - bottom;
  const xs = withPoints.flatMap((line) => line.points.map((p) => p[0]));
  const ys = withPoints.flatMap((line) => line.points.map((p) => p[1]));
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.05;
  y0 = y0 >= 0 ? Math.max(0, y0 - pad) : y0 - pad;
  y1 += pad;
  const X = (v) => left + ((v - x0) / (x1 - x0)) * plotW;
  const Y = (v) => top + plotH - ((v - y0) / (y1 - y0)) * plotH;
  const svg = svgRoot(W, H, `${yLabel} by ${xLabel}`);
  for (const t of niceTicks(y0, y1, 8)) {
    svg.append(s("line", { class: "grid-line", x1: left, x2: W - right, y1: Y(t), y2: Y(t) }));
    svg.append(s("text", { x: left - 6, y: Y(t) + 4, "text-anchor": "end" }, fmtEdge(t)));
  }
  for (const t of niceTicks(x0, x1, 6)) {
    svg.append(s("line", { class: "axis", x1: X(t), x2: X(t), y1: top + plotH, y2: top + plotH + 4 }));
    svg.append(s("text", { x: X(t), y: top + plotH + 16, "text-anchor": "middle" }, compact(t)));
  }
  svg.append(s("line", { class: "axis", x1: left, x2: W - right, y1: top + plotH, y2: top + plotH }));
  svg.append(s("line", { class: "axis", x1: left, x2: left, y1: top, y2: top + plotH }));
  svg.append(s("text", { x: left + plotW / 2, y: H - 4, "text-anchor": "middle" }, xLabel));
  if (yLabel) svg.append(s("text", { x: 12, y: top + plotH / 2, transform: `rotate(-90 12 ${top + plotH / 2})`, "text-anchor": "middle" }, yLabel));
  for (const line of withPoints) {
    const d = line.points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    svg.append(s("path", { class: `series series-${line.name}`, d, fill: "none", "stroke-width": 2,
      "stroke-linejoin": "round", "data-points": line.points.length }));
    if (line.points.length <= 120) {
      for (const [px, py] of line.points) {
        const dot = s("circle", { class: `dot dot-${line.name}`, cx: X(px).toFixed(1), cy: Y(py).toFixed(1), r: 2.5 });
        dot.append(s("title", {}, `${line.label || line.name} at ${xLabel} ${px}: ${py.toPrecision(4)}`));
        svg.append(dot);
      }
    }
  }
  const colors = { loss: "#3b5bdb", eval_loss: "#f08c00" };
  replace(container, svg, h("div", { class: "chart-legend" }, withPoints.map((line) =>
    h("span", {}, h("i", { style: `background:${colors[line.name] || "#495057"}` }),
      `${line.label || line.name} (${line.points.length} points)`))));
}
