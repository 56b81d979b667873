// Building the page: elements are made with h(), never from HTML strings, so a queue
// name or a message body is always text and never markup.

/** An element: h("a", {href: "#/"}, "Overview"). Attributes starting with "on" are
 *  listeners; `class` may be a string or a list; children may be nested lists. */
export function h(tag, attributes = {}, ...children) {
  const svg = SVG_TAGS.has(tag);
  const element = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) {
      // Only as listeners: an inline handler (a string) is never set.
      if (typeof value === "function") element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      const names = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
      element.setAttribute("class", names);
    } else if (name === "value" && !svg) {
      element.value = value;
    } else if (name === "checked" || name === "selected" || name === "disabled") {
      element[name] = Boolean(value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

const SVG_TAGS = new Set(["svg", "path", "line", "text", "g", "rect", "circle", "polyline", "title"]);

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else if (child instanceof Node) element.appendChild(child);
    else element.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

const integer = new Intl.NumberFormat("en");
const decimal = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });

/** A count: 12,345. */
export function count(n) {
  return typeof n === "number" ? integer.format(n) : "";
}

/** A rate per second: 12.5/s. */
export function rate(r) {
  return typeof r === "number" ? `${decimal.format(r)}/s` : "";
}

/** Bytes in binary units: 1.5 MiB. */
export function bytes(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : decimal.format(n)} ${units[i]}`;
}

/** Milliseconds as a duration: 1h 2m, 3.5s. */
export function duration(ms) {
  if (typeof ms !== "number") return "";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${decimal.format(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.floor(s % 60)}s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours}h ${m % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

/** A timestamp (ms since the epoch) as local date and time. */
export function when(ms) {
  if (typeof ms !== "number") return "";
  return new Date(ms).toLocaleString();
}

/** A JSON value as short text for a table cell: objects as key=value lists. */
export function brief(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "object") {
    return Object.entries(value)
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
      .join(", ");
  }
  return String(value);
}

/** A definition list of label/value pairs, skipping empty values. */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs
      .filter(([, v]) => v !== undefined && v !== null && v !== "")
      .map(([label, v]) => [h("dt", {}, label), h("dd", {}, v)]),
  );
}

/** A link to a page of the UI: path segments are encoded. */
export function link(text, ...segments) {
  return h("a", { href: path(...segments) }, text);
}

/** A hash path from segments: path("queues", "/", "q 1") is "#/queues/%2F/q%201". */
export function path(...segments) {
  return "#/" + segments.map((s) => encodeURIComponent(s)).join("/");
}
