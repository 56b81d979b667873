// Messages by hand: publishing one (to a queue through the default exchange, or to an
// exchange with a routing key) and getting some from a queue to look at.

import { h, fill, bytes } from "./dom.js";
import * as api from "./api.js";
import { field, form, keyValues, select, textInput } from "./forms.js";

/** The message properties the form offers, as the API names them. */
const PROPERTIES = [
  ["content_type", "Content type", "text/plain, application/json…"],
  ["content_encoding", "Content encoding", ""],
  ["correlation_id", "Correlation id", ""],
  ["reply_to", "Reply to", ""],
  ["expiration", "Expiration (ms)", "A per-message TTL, as text of a number."],
  ["message_id", "Message id", ""],
  ["type", "Type", ""],
  ["user_id", "User id", "Must be the publishing user's name."],
  ["app_id", "App id", ""],
  ["priority", "Priority", "0 to 255, for priority queues."],
  ["timestamp", "Timestamp", "Seconds since the epoch."],
];

/** A form that publishes to `exchange` in `vhost` (to a queue when `queue` is given,
 *  through the default exchange) and says whether the message was routed. */
export function publishForm(vhost, exchange, queue) {
  const headers = keyValues("headers");
  const properties = h(
    "details",
    { class: "properties" },
    h("summary", {}, "Properties"),
    h(
      "div",
      { class: "grid" },
      PROPERTIES.map(([name, label, hint]) => field(label, textInput(`property_${name}`), hint || undefined)),
    ),
  );
  const routed = h("p", { class: "outcome", "aria-live": "polite" });
  return form(
    { class: "publish" },
    [
      h("h2", {}, "Publish a message"),
      h(
        "div",
        { class: "grid" },
        queue
          ? h("p", { class: "hint" }, "Published through the default exchange, with the queue's name as routing key.")
          : field("Routing key", textInput("routing_key")),
        field("Delivery mode", select("delivery_mode", [["1", "1 – non-persistent"], ["2", "2 – persistent"]], "2")),
        field("Payload encoding", select("payload_encoding", [["string", "Text"], ["base64", "Base64"]], "string")),
      ),
      field("Headers", headers.element),
      properties,
      field("Payload", h("textarea", { name: "payload", rows: 5, spellcheck: "false" })),
      h("button", { type: "submit" }, "Publish"),
      routed,
    ],
    async (v) => {
      const props = { delivery_mode: Number(v.delivery_mode), headers: headers.value() };
      for (const [name] of PROPERTIES) {
        const text = (v[`property_${name}`] || "").trim();
        if (!text) continue;
        props[name] = name === "priority" || name === "timestamp" ? Number(text) : text;
        if (Number.isNaN(props[name])) throw new Error(`${name} must be a number.`);
      }
      const answer = await api.post(api.apiPath("exchanges", vhost, exchange || "amq.default", "publish"), {
        properties: props,
        routing_key: queue ? queue : v.routing_key || "",
        payload: v.payload,
        payload_encoding: v.payload_encoding,
      });
      fill(routed, answer.routed ? "Published: the message was routed." : "Published, but no queue was bound to take it: it was not routed.");
      routed.className = answer.routed ? "outcome ok" : "outcome warn";
      return answer.routed ? "Message published." : null;
    },
  );
}

/** What a message got from a queue shows: where it came from, its properties and
 *  headers, and its body as text or base64. */
function messageView(message, index) {
  const { headers, ...properties } = message.properties || {};
  const rows = [
    ["Exchange", message.exchange || "(default)"],
    ["Routing key", message.routing_key],
    ["Redelivered", String(message.redelivered)],
    ["Remaining in queue", String(message.message_count)],
    ["Size", bytes(message.payload_bytes)],
    ...Object.entries(properties).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]),
  ];
  return h(
    "article",
    { class: "message" },
    h("h3", {}, `Message ${index + 1}`),
    h("table", { class: "facts-table" }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))),
    headers && Object.keys(headers).length
      ? h("table", { class: "facts-table headers" }, h("caption", {}, "Headers"), h("tbody", {}, Object.entries(headers).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, typeof v === "object" ? JSON.stringify(v) : String(v))))))
      : null,
    h("p", { class: "payload-label" }, message.payload_encoding === "base64" ? "Payload (base64)" : "Payload"),
    h("pre", { class: "payload" }, message.payload),
  );
}

/** A form that gets messages from a queue and shows them. */
export function getForm(vhost, queue, afterwards) {
  const results = h("div", { class: "messages", "aria-live": "polite" });
  const element = h(
    "div",
    { class: "get" },
    form(
      {},
      [
        h("h2", {}, "Get messages"),
        h(
          "div",
          { class: "grid" },
          field(
            "Ack mode",
            select(
              "ackmode",
              [
                ["ack_requeue_true", "Nack, requeue (look only)"],
                ["ack_requeue_false", "Ack (take them)"],
                ["reject_requeue_true", "Reject, requeue"],
                ["reject_requeue_false", "Reject, no requeue (dead-letter)"],
              ],
              "ack_requeue_true",
            ),
            "Requeued messages come back marked redelivered.",
          ),
          field("Encoding", select("encoding", [["auto", "Text when it is valid UTF-8"], ["base64", "Base64"]], "auto")),
          field("Messages", h("input", { type: "number", name: "count", min: 1, max: 1000, value: 1 })),
          field("Truncate at (bytes)", h("input", { type: "number", name: "truncate", min: 1, value: 50000 })),
        ),
        h("button", { type: "submit" }, "Get messages"),
      ],
      async (v) => {
        const answer = await api.post(api.apiPath("queues", vhost, queue, "get"), {
          count: Number(v.count) || 1,
          ackmode: v.ackmode,
          encoding: v.encoding,
          truncate: Number(v.truncate) || undefined,
        });
        fill(results, answer.length ? answer.map(messageView) : h("p", { class: "empty" }, "The queue is empty."));
        if (afterwards) afterwards();
        return null;
      },
    ),
    results,
  );
  return element;
}
