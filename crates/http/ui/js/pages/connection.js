// One connection: the client, its TLS, its traffic, its channels, and closing it with a
// reason the client is told.

import { h, fill, count, rate, bytes, brief, facts, when, link } from "../dom.js";
import * as api from "../api.js";
import { lineChart, draw, ratePoints, historyQuery, rangeChoice } from "../chart.js";
import { confirmAction, field, form, textInput } from "../forms.js";
import { clientOf } from "./connections.js";
import { mode } from "./channels.js";


function channelsTable(channels) {
  if (!channels.length) return h("p", { class: "empty" }, "No channels are open.");
  return h(
    "table",
    { class: "list channels" },
    h("thead", {}, h("tr", {}, ["Channel", "Mode", "Prefetch", "Consumers", "Unacked", "Unconfirmed", "Publish", "Deliver / get"].map((t) => h("th", {}, t)))),
    h(
      "tbody",
      {},
      channels.map((c) =>
        h(
          "tr",
          {},
          h("td", {}, link(c.name, "channels", c.name)),
          h("td", {}, mode(c)),
          h("td", { class: "numeric" }, count(c.prefetch_count)),
          h("td", { class: "numeric" }, count(c.consumer_count)),
          h("td", { class: "numeric" }, count(c.messages_unacknowledged)),
          h("td", { class: "numeric" }, count(c.messages_unconfirmed)),
          h("td", { class: "numeric" }, rate(c.message_stats?.publish_details?.rate ?? 0)),
          h("td", { class: "numeric" }, rate(c.message_stats?.deliver_get_details?.rate ?? 0)),
        ),
      ),
    ),
  );
}

export function page({ name }) {
  const base = api.apiPath("connections", name);
  const summary = h("div");
  const traffic = lineChart([], (v) => `${bytes(v)}/s`, { title: "Data rates" });
  const channels = h("div");
  let closed = false;
  const closeForm = form(
    { class: "close-connection" },
    [
      h("h2", {}, "Close this connection"),
      field("Reason", textInput("reason", { value: "Closed via management UI" }), "The client is told this reason (connection.close with 320 CONNECTION_FORCED)."),
      h("button", { type: "submit", class: "danger" }, "Close connection"),
    ],
    async (v) => {
      if (!(await confirmAction(`Close the connection ${name}?`, "Close"))) return null;
      // A header carries bytes: the reason goes as UTF-8, which the broker reads back.
      const utf8 = String.fromCharCode(...new TextEncoder().encode(v.reason));
      await api.request("DELETE", base, undefined, { headers: { "X-Reason": utf8 } });
      closed = true;
      // The broker answers before the client has acknowledged the close: wait (a little)
      // for it to leave the list, so the list shown next no longer has it.
      for (let i = 0; i < 20; i++) {
        try {
          await api.get(`${base}?columns=name`);
        } catch (error) {
          if (error.status === 404) break;
          throw error;
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      location.hash = "#/connections";
      return "Connection closed.";
    },
  );
  const element = h(
    "div",
    { class: "connection" },
    h("p", { class: "crumbs" }, h("a", { href: "#/connections" }, "Connections")),
    h("div", { class: "title" }, h("h1", {}, "Connection ", h("code", {}, name)), rangeChoice(() => refresh().catch(() => {}))),
    summary,
    h("div", { class: "charts" }, traffic),
    h("h2", {}, "Channels"),
    channels,
    closeForm,
  );

  async function refresh() {
    if (closed) return;
    let c;
    try {
      c = await api.get(`${base}?${historyQuery("data_rates")}`);
    } catch (error) {
      if (error.status === 404) {
        fill(summary, h("p", { class: "alarm" }, `The connection ${name} is closed.`));
        fill(channels);
        closeForm.hidden = true;
        return;
      }
      throw error;
    }
    const p = c.client_properties || {};
    fill(
      summary,
      facts([
        ["User", c.user],
        ["Virtual host", c.vhost],
        ["State", c.state],
        ["Client", clientOf(c)],
        ["Platform", p.platform],
        ["Name given by the client", c.user_provided_name || ""],
        ["From", `${c.peer_host}:${c.peer_port}`],
        ["To", `${c.host}:${c.port}`],
        ["Protocol", c.protocol],
        ["Authentication", c.auth_mechanism],
        ["TLS", c.ssl ? [c.ssl_protocol, c.ssl_cipher].filter(Boolean).join(", ") || "yes" : "no"],
        ["Client certificate", c.peer_cert_subject || ""],
        ["Connected", when(c.connected_at)],
        ["Channels", count(c.channels)],
        ["Received", bytes(c.recv_oct)],
        ["Sent", bytes(c.send_oct)],
        ["Client properties", brief(p)],
      ]),
    );
    draw(
      traffic,
      [
        { label: "From client", points: ratePoints(c.recv_oct_details), latest: c.recv_oct_details?.rate ?? 0 },
        { label: "To client", points: ratePoints(c.send_oct_details), latest: c.send_oct_details?.rate ?? 0 },
      ],
      (v) => `${bytes(v)}/s`,
      170,
      "Data rates",
    );
    try {
      fill(channels, channelsTable(await api.get(`${base}/channels`)));
    } catch (error) {
      // Closed between the two requests: the next refresh says so.
      if (error.status !== 404) throw error;
    }
  }

  return { title: `Connection ${name}`, element, refresh };
}
