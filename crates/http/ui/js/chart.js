// Line charts of the API's samples: `*_details.samples` are a gauge's values (queue
// lengths) or a counter's (messages published so far), newest first; a counter's chart
// shows the rate between one sample and the next.

import { h, fill } from "./dom.js";

/** [[time ms, value]...] oldest first, from a gauge's samples. */
export function gaugePoints(details) {
  const samples = (details && details.samples) || [];
  return samples.map((s) => [s.timestamp, s.sample]).reverse();
}

/** [[time ms, rate per second]...] oldest first, from a counter's samples. */
export function ratePoints(details) {
  const samples = ((details && details.samples) || []).slice().reverse();
  const points = [];
  for (let i = 1; i < samples.length; i++) {
    const seconds = (samples[i].timestamp - samples[i - 1].timestamp) / 1000;
    if (seconds <= 0) continue;
    points.push([samples[i].timestamp, Math.max(0, (samples[i].sample - samples[i - 1].sample) / seconds)]);
  }
  return points;
}

/** A chart of several series: [{label, points, latest}], `format` for the axis and the
 *  legend's values. */
export function lineChart(series, format, { height = 170, title } = {}) {
  const element = h("figure", { class: "chart" });
  draw(element, series, format, height, title);
  return element;
}

/** Draws (again) into a chart made by lineChart. */
export function draw(element, series, format, height = 170, title) {
  // Drawn at the figure's inner width (the SVG scales to it, see app.css).
  const style = element.isConnected ? getComputedStyle(element) : null;
  const inner = style ? element.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) : 0;
  const width = Math.max(320, Math.min(1200, Math.round(inner) || 560));
  const pad = { left: 56, right: 10, top: 10, bottom: 22 };
  const all = series.flatMap((s) => s.points);
  const svg = h("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title || "chart" });
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  if (all.length < 2) {
    svg.appendChild(h("text", { x: width / 2, y: height / 2, class: "no-data", "text-anchor": "middle" }, "Collecting samples…"));
  } else {
    const t0 = Math.min(...all.map((p) => p[0]));
    const t1 = Math.max(...all.map((p) => p[0]));
    const top = niceTop(Math.max(...all.map((p) => p[1])));
    const x = (t) => pad.left + (t1 === t0 ? 0 : ((t - t0) / (t1 - t0)) * plotW);
    const y = (v) => pad.top + plotH - (v / top) * plotH;
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      svg.appendChild(h("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
      svg.appendChild(h("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, format(v)));
    }
    const span = Math.round((t1 - t0) / 1000);
    svg.appendChild(h("text", { x: pad.left, y: height - 6, class: "axis" }, span >= 60 ? `${Math.round(span / 60)} min ago` : `${span} s ago`));
    svg.appendChild(h("text", { x: width - pad.right, y: height - 6, "text-anchor": "end", class: "axis" }, "now"));
    series.forEach((s, i) => {
      if (s.points.length < 2) return;
      const d = s.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
      svg.appendChild(h("path", { d, class: `series series-${i}` }));
    });
  }
  const legend = h(
    "figcaption",
    {},
    title ? h("strong", {}, title) : null,
    h(
      "ul",
      { class: "legend" },
      series.map((s, i) => {
        const latest = s.latest !== undefined ? s.latest : s.points.length ? s.points[s.points.length - 1][1] : undefined;
        return h("li", { "data-series": s.label }, h("span", { class: `swatch series-${i}` }), s.label, h("b", {}, latest === undefined ? "" : format(latest)));
      }),
    ),
  );
  fill(element, legend, svg);
}

/** A round number at or above `max` for the top of the axis. */
function niceTop(max) {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= max) return step * power;
  }
  return 10 * power;
}

const RANGE_KEY = "wharf.chartRange";
/** The spans charts may show, in seconds: the broker keeps 10 minutes of samples. */
const RANGES = [
  [60, "Last minute"],
  [600, "Last 10 minutes"],
];

/** The chosen span in seconds (a minute unless chosen otherwise, as RabbitMQ's UI). */
export function chartRange() {
  const chosen = Number(localStorage.getItem(RANGE_KEY));
  return RANGES.some(([seconds]) => seconds === chosen) ? chosen : 60;
}

/** The query asking for samples over the chosen span, one every 5 s, for `kinds`
 *  ("lengths", "msg_rates", "data_rates"). */
export function historyQuery(...kinds) {
  const age = chartRange();
  return kinds.map((kind) => `${kind}_age=${age}&${kind}_incr=5`).join("&");
}

/** A menu of the spans; `changed` runs when another is chosen. */
export function rangeChoice(changed) {
  const menu = h(
    "select",
    { class: "chart-range", "aria-label": "Charts show" },
    RANGES.map(([seconds, label]) => h("option", { value: seconds, selected: seconds === chartRange() }, label)),
  );
  menu.addEventListener("change", () => {
    localStorage.setItem(RANGE_KEY, menu.value);
    changed();
  });
  return menu;
}
