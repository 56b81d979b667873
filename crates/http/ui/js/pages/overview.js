// The overview: what is queued, how fast messages move, the node's alarms and resources,
// and where clients connect.

import { h, fill, count, rate, bytes, duration } from "../dom.js";
import * as api from "../api.js";
import { lineChart, draw, gaugePoints, ratePoints, historyQuery, rangeChoice } from "../chart.js";

/** The rates charted, as the API names them. */
export const RATE_SERIES = [
  ["Publish", "publish"],
  ["Confirm", "confirm"],
  ["Deliver", "deliver_get"],
  ["Redeliver", "redeliver"],
  ["Ack", "ack"],
];

export function rateSeries(stats) {
  const series = RATE_SERIES.map(([label, key]) => ({
    label,
    points: ratePoints(stats[`${key}_details`]),
    latest: stats[`${key}_details`]?.rate ?? 0,
  }));
  const returned = stats.return_unroutable_details;
  const dropped = stats.drop_unroutable_details;
  if (returned || dropped) {
    const r = ratePoints(returned);
    const d = ratePoints(dropped);
    series.push({
      label: "Unroutable",
      points: r.length >= d.length ? r.map(([t, v], i) => [t, v + (d[i] ? d[i][1] : 0)]) : d.map(([t, v], i) => [t, v + (r[i] ? r[i][1] : 0)]),
      latest: (returned?.rate ?? 0) + (dropped?.rate ?? 0),
    });
  }
  return series;
}

function tile(label, value, id) {
  return h("div", { class: "tile", "data-total": id }, h("span", { class: "label" }, label), h("b", {}, value));
}

function alarms(node) {
  const raised = [];
  if (node.mem_alarm) {
    raised.push(`Memory alarm: ${bytes(node.mem_used)} used of a ${bytes(node.mem_limit)} limit. Publishers are blocked until memory falls below it.`);
  }
  if (node.disk_free_alarm) {
    raised.push(`Disk alarm: ${bytes(node.disk_free)} free, under the ${bytes(node.disk_free_limit)} limit. Publishers are blocked until space is freed.`);
  }
  return raised.map((text) => h("div", { class: "alarm", role: "alert" }, text));
}

function gauge(label, used, limit, invert) {
  const share = limit > 0 ? Math.min(1, used / limit) : 0;
  const meter = h("meter", { min: 0, max: 1, value: share, low: 0.6, high: 0.85, optimum: 0 });
  const text = invert ? `${bytes(used)} free (alarm under ${bytes(limit)})` : `${bytes(used)} of ${bytes(limit)}`;
  return h("div", { class: "gauge" }, h("span", { class: "label" }, label), invert ? null : meter, h("span", {}, text));
}

export function page() {
  const totals = h("div", { class: "tiles" });
  const alarmArea = h("div", { class: "alarms" });
  const queued = lineChart([], count, { title: "Queued messages" });
  const rates = lineChart([], rate, { title: "Message rates" });
  const node = h("section", { class: "node" });
  const element = h(
    "div",
    { class: "overview" },
    h("div", { class: "title" }, h("h1", {}, "Overview"), rangeChoice(() => refresh().catch(() => {}))),
    alarmArea,
    totals,
    h("div", { class: "charts" }, queued, rates),
    node,
  );

  async function refresh() {
    const overview = await api.get(`/api/overview?${historyQuery("lengths", "msg_rates")}`);
    const queues = overview.queue_totals || {};
    const objects = overview.object_totals || {};
    fill(
      totals,
      tile("Ready", count(queues.messages_ready ?? 0), "messages_ready"),
      tile("Unacked", count(queues.messages_unacknowledged ?? 0), "messages_unacknowledged"),
      tile("Total", count(queues.messages ?? 0), "messages"),
      tile("Connections", count(objects.connections ?? 0), "connections"),
      tile("Channels", count(objects.channels ?? 0), "channels"),
      tile("Exchanges", count(objects.exchanges ?? 0), "exchanges"),
      tile("Queues", count(objects.queues ?? 0), "queues"),
      objects.consumers !== undefined ? tile("Consumers", count(objects.consumers), "consumers") : null,
    );
    draw(
      queued,
      [
        { label: "Ready", points: gaugePoints(queues.messages_ready_details), latest: queues.messages_ready },
        { label: "Unacked", points: gaugePoints(queues.messages_unacknowledged_details), latest: queues.messages_unacknowledged },
      ],
      count,
      170,
      "Queued messages",
    );
    draw(rates, rateSeries(overview.message_stats || {}), rate, 170, "Message rates");
    if (!api.isMonitor()) {
      fill(node);
      return;
    }
    const [about] = await api.get("/api/nodes");
    fill(alarmArea, alarms(about));
    fill(
      node,
      h("h2", {}, "Node ", h("code", {}, about.name)),
      h(
        "div",
        { class: "gauges" },
        gauge("Memory", about.mem_used, about.mem_limit),
        gauge("Disk", about.disk_free, about.disk_free_limit, true),
        h("div", { class: "gauge" }, h("span", { class: "label" }, "Uptime"), h("span", {}, duration(about.uptime))),
        h("div", { class: "gauge" }, h("span", { class: "label" }, "Version"), h("span", {}, `Wharf ${overview.product_version}`)),
      ),
      h("h2", {}, "Listeners"),
      h(
        "table",
        { class: "list listeners" },
        h("thead", {}, h("tr", {}, h("th", {}, "Protocol"), h("th", {}, "Address"), h("th", { class: "numeric" }, "Port"))),
        h(
          "tbody",
          {},
          (overview.listeners || []).map((l) =>
            h("tr", {}, h("td", {}, l.protocol), h("td", {}, l.ip_address), h("td", { class: "numeric" }, String(l.port))),
          ),
        ),
      ),
    );
  }

  return { title: "Overview", element, refresh };
}
