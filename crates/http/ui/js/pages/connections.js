// The connections: who is connected, from where, with what client, and how much traffic.

import { h, count, bytes, link } from "../dom.js";
import * as api from "../api.js";
import { pagedTable } from "../table.js";

export function clientOf(c) {
  const p = c.client_properties || {};
  return [p.product, p.version].filter(Boolean).join(" ");
}

export function page(_params, { search, vhost }) {
  const columns = [
    vhost ? null : { key: "vhost", label: "Virtual host", sort: "vhost", cell: (c) => c.vhost },
    { key: "name", label: "Name", sort: "name", cell: (c) => [link(c.name, "connections", c.name), c.user_provided_name ? h("div", { class: "hint" }, c.user_provided_name) : null] },
    { key: "user", label: "User", sort: "user", cell: (c) => c.user },
    { key: "state", label: "State", sort: "state", cell: (c) => h("span", { class: `state ${c.state}` }, c.state) },
    { key: "ssl", label: "TLS", sort: "ssl", cell: (c) => (c.ssl ? c.ssl_protocol || "yes" : "no") },
    { key: "client", label: "Client", sort: "client_properties.product", cell: clientOf },
    { key: "channels", label: "Channels", sort: "channels", numeric: true, cell: (c) => count(c.channels) },
    { key: "recv", label: "From client", sort: "recv_oct_details.rate", numeric: true, cell: (c) => `${bytes(c.recv_oct_details?.rate ?? 0)}/s` },
    { key: "send", label: "To client", sort: "send_oct_details.rate", numeric: true, cell: (c) => `${bytes(c.send_oct_details?.rate ?? 0)}/s` },
  ].filter(Boolean);
  const table = pagedTable({
    columns,
    search,
    source: () => (vhost ? api.apiPath("vhosts", vhost, "connections") : "/api/connections"),
    empty: "No clients are connected.",
  });
  return { title: "Connections", element: h("div", {}, h("h1", {}, "Connections", vhost ? h("small", {}, ` in ${vhost}`) : null), table.element), refresh: table.load };
}
