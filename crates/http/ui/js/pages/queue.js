// One queue: its depth and rates over the last minutes, its consumers and bindings, and
// what can be done to it (get, publish, purge, delete).

import { h, fill, count, rate, bytes, brief, facts, link } from "../dom.js";
import * as api from "../api.js";
import { lineChart, draw, gaugePoints, ratePoints, historyQuery, rangeChoice } from "../chart.js";
import { actionButton, confirmAction, field, form, textInput } from "../forms.js";
import { bindingsTable, bindForm } from "../bindings.js";
import { publishForm, getForm } from "../messages.js";
import { features } from "./queues.js";


function consumersTable(consumers) {
  if (!consumers.length) return h("p", { class: "empty" }, "No consumers.");
  return h(
    "table",
    { class: "list consumers" },
    h(
      "thead",
      {},
      h("tr", {}, ["Channel", "Consumer tag", "Ack required", "Exclusive", "Prefetch", "Active", "Arguments"].map((t) => h("th", {}, t))),
    ),
    h(
      "tbody",
      {},
      consumers.map((c) =>
        h(
          "tr",
          {},
          h("td", {}, link(c.channel_details.name, "channels", c.channel_details.name)),
          h("td", {}, h("code", {}, c.consumer_tag)),
          h("td", {}, c.ack_required ? "yes" : "no"),
          h("td", {}, c.exclusive ? "yes" : "no"),
          h("td", { class: "numeric" }, String(c.prefetch_count)),
          h("td", {}, c.activity_status || (c.active ? "up" : "waiting")),
          h("td", {}, brief(c.arguments)),
        ),
      ),
    ),
  );
}

/** Moves the queue's ready messages to another queue of the vhost. */
function moveForm(vhost, name, moved) {
  return form(
    { class: "move" },
    [
      h("h2", {}, "Move messages"),
      h("p", { class: "hint" }, "Moves the messages ready now to another queue of this vhost, published to it through the default exchange. Each batch leaves this queue only once the other holds it."),
      field("Destination queue", textInput("destination", { required: true })),
      h("button", { type: "submit" }, "Move messages"),
    ],
    async (v) => {
      const destination = v.destination.trim();
      if (!destination) throw new Error("Name the queue to move the messages to.");
      const answer = await api.post(api.apiPath("wharf", "queues", vhost, name, "move"), { destination });
      moved();
      return `${answer.moved} messages moved to ${destination}.`;
    },
  );
}

export function page({ vhost, name }) {
  const base = api.apiPath("queues", vhost, name);
  const summary = h("div", { class: "summary" });
  const depth = lineChart([], count, { title: "Queued messages" });
  const rates = lineChart([], rate, { title: "Message rates" });
  const consumers = h("div");
  const bindings = h("div");
  let gone = false;

  const reloadBindings = () => refreshBindings().catch(() => {});
  async function refreshBindings() {
    const list = await api.get(`${base}/bindings`);
    fill(bindings, bindingsTable(list, "source", reloadBindings));
  }

  const purge = actionButton(
    "Purge",
    async () => {
      if (!(await confirmAction(`Remove every ready message from ${name}? This cannot be undone.`, "Purge"))) return null;
      await api.del(`${base}/contents`);
      refresh().catch(() => {});
      return `Queue ${name} purged.`;
    },
    { class: "danger", id: "purge" },
  );
  const remove = actionButton(
    "Delete",
    async () => {
      if (!(await confirmAction(`Delete the queue ${name} and the messages in it? This cannot be undone.`, "Delete"))) return null;
      await api.del(base);
      gone = true;
      location.hash = "#/queues";
      return `Queue ${name} deleted.`;
    },
    { class: "danger", id: "delete" },
  );

  const element = h(
    "div",
    { class: "queue" },
    h("p", { class: "crumbs" }, h("a", { href: "#/queues" }, "Queues"), " / ", vhost),
    h("div", { class: "title" }, h("h1", {}, "Queue ", h("code", {}, name)), rangeChoice(() => refresh().catch(() => {}))),
    summary,
    h("div", { class: "charts" }, depth, rates),
    h("h2", {}, "Consumers"),
    consumers,
    h("h2", {}, "Bindings"),
    bindings,
    bindForm(vhost, { queue: name }, reloadBindings),
    publishForm(vhost, "", name),
    getForm(vhost, name, () => refresh().catch(() => {})),
    moveForm(vhost, name, () => refresh().catch(() => {})),
    h("section", { class: "danger-zone" }, h("h2", {}, "Purge or delete"), h("div", { class: "buttons" }, purge, remove)),
  );

  let asked = 0;
  async function refresh() {
    if (gone) return;
    // Only the latest refresh draws: one started before a purge may answer after it.
    const ticket = ++asked;
    let queue;
    try {
      queue = await api.get(`${base}?${historyQuery("lengths", "msg_rates")}`);
      if (ticket !== asked) return;
    } catch (error) {
      if (error.status === 404) {
        fill(summary, h("p", { class: "alarm" }, `The queue ${name} in ${vhost} does not exist (any more).`));
        return;
      }
      throw error;
    }
    const stats = queue.message_stats || {};
    fill(
      summary,
      facts([
        ["Virtual host", queue.vhost],
        ["Type", queue.type],
        ["Features", h("span", {}, features(queue))],
        ["State", queue.state],
        ["Ready", count(queue.messages_ready)],
        ["Unacked", count(queue.messages_unacknowledged)],
        ["Total", count(queue.messages)],
        ["Message bytes", bytes(queue.message_bytes)],
        ["Consumers", count(queue.consumers)],
        ["Consumer utilisation", queue.consumer_utilisation === undefined ? "" : `${Math.round((queue.consumer_utilisation || 0) * 100)}%`],
        ["Memory", bytes(queue.memory)],
        ["Policy", queue.policy || ""],
        ["Arguments", brief(queue.arguments)],
      ]),
    );
    draw(
      depth,
      [
        { label: "Ready", points: gaugePoints(queue.messages_ready_details), latest: queue.messages_ready },
        { label: "Unacked", points: gaugePoints(queue.messages_unacknowledged_details), latest: queue.messages_unacknowledged },
      ],
      count,
      170,
      "Queued messages",
    );
    draw(
      rates,
      [
        ["Publish", "publish"],
        ["Deliver / get", "deliver_get"],
        ["Redeliver", "redeliver"],
        ["Ack", "ack"],
      ].map(([label, key]) => ({ label, points: ratePoints(stats[`${key}_details`]), latest: stats[`${key}_details`]?.rate ?? 0 })),
      rate,
      170,
      "Message rates",
    );
    fill(consumers, consumersTable(queue.consumer_details || []));
    await refreshBindings();
  }

  return { title: `Queue ${name}`, element, refresh };
}
