// The queues: one page of the list at a time, as the API sorts and filters it, and a
// form to declare a queue.

import { h, count, rate, link } from "../dom.js";
import * as api from "../api.js";
import { pagedTable } from "../table.js";
import { field, form, keyValues, select, textInput } from "../forms.js";

/** The arguments a queue is commonly declared with, with what they do. */
export const QUEUE_ARGUMENTS = [
  { key: "x-message-ttl", type: "number", label: "Message TTL", hint: "How long (ms) a message may wait in the queue before it is discarded or dead-lettered." },
  { key: "x-expires", type: "number", label: "Auto expire", hint: "How long (ms) the queue may go unused before it is deleted." },
  { key: "x-max-length", type: "number", label: "Max length", hint: "How many ready messages the queue holds before the overflow behaviour applies." },
  { key: "x-max-length-bytes", type: "number", label: "Max length bytes", hint: "How many bytes of ready message bodies the queue holds." },
  { key: "x-overflow", type: "string", label: "Overflow", hint: "drop-head (default), reject-publish or reject-publish-dlx." },
  { key: "x-dead-letter-exchange", type: "string", label: "Dead letter exchange", hint: "Where rejected, expired or dropped messages are republished." },
  { key: "x-dead-letter-routing-key", type: "string", label: "Dead letter routing key", hint: "The routing key dead-lettered messages get (their own when unset)." },
  { key: "x-single-active-consumer", type: "boolean", label: "Single active consumer", hint: "Only one consumer at a time receives; the next takes over when it goes." },
  { key: "x-max-priority", type: "number", label: "Maximum priority", hint: "Makes a priority queue with priorities 0 to this (at most 255)." },
  { key: "x-delivery-limit", type: "number", label: "Delivery limit", hint: "Quorum queues: how many times a message may be redelivered before it is dropped or dead-lettered." },
];

/** D, AD, Excl, TTL... as RabbitMQ's list shows a queue's features. */
export function features(queue) {
  const marks = [];
  if (queue.durable) marks.push(["D", "durable"]);
  if (queue.auto_delete) marks.push(["AD", "auto-delete"]);
  if (queue.exclusive) marks.push(["Excl", "exclusive"]);
  for (const key of Object.keys(queue.arguments || {})) {
    const known = QUEUE_ARGUMENTS.find((a) => a.key === key);
    if (key === "x-queue-type") continue;
    marks.push([known ? known.label.replace(/ /g, "") : key, `${key}: ${JSON.stringify(queue.arguments[key])}`]);
  }
  if (queue.policy) marks.push([`Policy ${queue.policy}`, "policy applied"]);
  return marks.map(([text, title]) => h("abbr", { class: "feature", title }, text));
}

function declareForm(vhosts, chosen, declared) {
  const args = keyValues("arguments", QUEUE_ARGUMENTS);
  const vhost = select("vhost", vhosts, chosen || vhosts[0]);
  return form(
    { class: "declare" },
    [
      h("h2", {}, "Add a queue"),
      h(
        "div",
        { class: "grid" },
        field("Virtual host", vhost),
        field("Name", textInput("name", { required: true, placeholder: "orders" })),
        field("Type", select("type", [["classic", "Classic"], ["quorum", "Quorum"]], "classic"), "Quorum queues are accepted as on a single RabbitMQ node."),
        field("Durability", select("durable", [["true", "Durable"], ["false", "Transient"]], "true"), "A durable queue survives a restart of the broker."),
        field("Auto delete", select("auto_delete", [["false", "No"], ["true", "Yes"]], "false"), "Deleted when its last consumer goes."),
      ),
      field("Arguments", args.element),
      h("button", { type: "submit" }, "Add queue"),
    ],
    async (v) => {
      if (!v.name.trim()) throw new Error("A queue needs a name.");
      const argumentsTable = args.value();
      if (v.type !== "classic") argumentsTable["x-queue-type"] = v.type;
      await api
        .put(api.apiPath("queues", v.vhost, v.name.trim()), {
          durable: v.durable === "true",
          auto_delete: v.auto_delete === "true",
          arguments: argumentsTable,
        })
        .catch((error) => {
          // The API says only "Access refused." for a name in the broker's own space.
          if (error.status === 401 && v.name.trim().startsWith("amq.")) {
            throw new Error("Access refused: queue names starting with amq. are reserved for the broker.");
          }
          throw error;
        });
      declared();
      return `Queue ${v.name.trim()} added.`;
    },
  );
}

export function page(_params, { search, vhost }) {
  const allVhosts = !vhost;
  const columns = [
    allVhosts ? { key: "vhost", label: "Virtual host", sort: "vhost", cell: (q) => q.vhost } : null,
    { key: "name", label: "Name", sort: "name", cell: (q) => link(q.name, "queues", q.vhost, q.name) },
    { key: "type", label: "Type", sort: "type", cell: (q) => q.type },
    { key: "features", label: "Features", sort: null, cell: features },
    { key: "state", label: "State", sort: "state", cell: (q) => h("span", { class: `state ${q.state}` }, q.state) },
    { key: "messages_ready", label: "Ready", sort: "messages_ready", numeric: true, cell: (q) => count(q.messages_ready) },
    { key: "messages_unacknowledged", label: "Unacked", sort: "messages_unacknowledged", numeric: true, cell: (q) => count(q.messages_unacknowledged) },
    { key: "messages", label: "Total", sort: "messages", numeric: true, cell: (q) => count(q.messages) },
    { key: "incoming", label: "Incoming", sort: "message_stats.publish_details.rate", numeric: true, cell: (q) => rate(q.message_stats?.publish_details?.rate ?? 0) },
    { key: "deliver", label: "Deliver / get", sort: "message_stats.deliver_get_details.rate", numeric: true, cell: (q) => rate(q.message_stats?.deliver_get_details?.rate ?? 0) },
    { key: "ack", label: "Ack", sort: "message_stats.ack_details.rate", numeric: true, cell: (q) => rate(q.message_stats?.ack_details?.rate ?? 0) },
    { key: "consumers", label: "Consumers", sort: "consumers", numeric: true, cell: (q) => count(q.consumers) },
  ].filter(Boolean);
  const table = pagedTable({
    columns,
    search,
    source: () => (vhost ? api.apiPath("queues", vhost) : "/api/queues"),
    rowId: (q) => `${q.vhost}/${q.name}`,
    empty: "No queues yet.",
  });
  const declareArea = h("div");
  const element = h("div", {}, h("h1", {}, "Queues", vhost ? h("small", {}, ` in ${vhost}`) : null), table.element, declareArea);
  api
    .get("/api/vhosts?columns=name")
    .then((vhosts) => declareArea.appendChild(declareForm(vhosts.map((v) => v.name), vhost, () => table.load())))
    .catch(() => {});
  return { title: "Queues", element, refresh: table.load };
}
