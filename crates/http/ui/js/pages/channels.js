// The channels: each connection's channels, their prefetch, unacked and unconfirmed
// messages, and rates.

import { h, count, rate, link } from "../dom.js";
import * as api from "../api.js";
import { pagedTable } from "../table.js";

/** The mode letters RabbitMQ shows: C for confirms, T for transactions. */
export function mode(c) {
  return [c.confirm ? "C" : "", c.transactional ? "T" : ""].join("");
}

export function page(_params, { search, vhost }) {
  const columns = [
    vhost ? null : { key: "vhost", label: "Virtual host", sort: "vhost", cell: (c) => c.vhost },
    { key: "name", label: "Channel", sort: "name", cell: (c) => link(c.name, "channels", c.name) },
    { key: "user", label: "User", sort: "user", cell: (c) => c.user },
    { key: "mode", label: "Mode", sort: null, cell: mode },
    { key: "state", label: "State", sort: "state", cell: (c) => h("span", { class: `state ${c.state}` }, c.state) },
    { key: "prefetch", label: "Prefetch", sort: "prefetch_count", numeric: true, cell: (c) => count(c.prefetch_count) },
    { key: "consumers", label: "Consumers", sort: "consumer_count", numeric: true, cell: (c) => count(c.consumer_count) },
    { key: "unacked", label: "Unacked", sort: "messages_unacknowledged", numeric: true, cell: (c) => count(c.messages_unacknowledged) },
    { key: "unconfirmed", label: "Unconfirmed", sort: "messages_unconfirmed", numeric: true, cell: (c) => count(c.messages_unconfirmed) },
    { key: "publish", label: "Publish", sort: "message_stats.publish_details.rate", numeric: true, cell: (c) => rate(c.message_stats?.publish_details?.rate ?? 0) },
    { key: "deliver", label: "Deliver / get", sort: "message_stats.deliver_get_details.rate", numeric: true, cell: (c) => rate(c.message_stats?.deliver_get_details?.rate ?? 0) },
    { key: "ack", label: "Ack", sort: "message_stats.ack_details.rate", numeric: true, cell: (c) => rate(c.message_stats?.ack_details?.rate ?? 0) },
  ].filter(Boolean);
  const table = pagedTable({
    columns,
    search,
    source: () => (vhost ? api.apiPath("vhosts", vhost, "channels") : "/api/channels"),
    empty: "No channels are open.",
  });
  return { title: "Channels", element: h("div", {}, h("h1", {}, "Channels", vhost ? h("small", {}, ` in ${vhost}`) : null), table.element), refresh: table.load };
}
