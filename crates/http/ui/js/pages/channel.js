// One channel: its settings, counts and consumers.

import { h, fill, count, rate, brief, facts, link } from "../dom.js";
import * as api from "../api.js";
import { mode } from "./channels.js";

export function page({ name }) {
  const summary = h("div");
  const consumers = h("div");
  const element = h(
    "div",
    { class: "channel" },
    h("p", { class: "crumbs" }, h("a", { href: "#/channels" }, "Channels")),
    h("h1", {}, "Channel ", h("code", {}, name)),
    summary,
    h("h2", {}, "Consumers"),
    consumers,
  );

  async function refresh() {
    let c;
    try {
      c = await api.get(api.apiPath("channels", name));
    } catch (error) {
      if (error.status === 404) {
        fill(summary, h("p", { class: "alarm" }, `The channel ${name} is closed.`));
        fill(consumers);
        return;
      }
      throw error;
    }
    const stats = c.message_stats || {};
    fill(
      summary,
      facts([
        ["Connection", link(c.connection_details.name, "connections", c.connection_details.name)],
        ["User", c.user],
        ["Virtual host", c.vhost],
        ["Mode", mode(c) || "plain"],
        ["State", c.state],
        ["Prefetch (per consumer)", count(c.prefetch_count)],
        ["Prefetch (channel)", count(c.global_prefetch_count)],
        ["Unacked", count(c.messages_unacknowledged)],
        ["Unconfirmed", count(c.messages_unconfirmed)],
        ["Publish", rate(stats.publish_details?.rate ?? 0)],
        ["Deliver / get", rate(stats.deliver_get_details?.rate ?? 0)],
        ["Ack", rate(stats.ack_details?.rate ?? 0)],
      ]),
    );
    const list = c.consumer_details || [];
    fill(
      consumers,
      list.length
        ? h(
            "table",
            { class: "list consumers" },
            h("thead", {}, h("tr", {}, ["Queue", "Consumer tag", "Ack required", "Prefetch", "Arguments"].map((t) => h("th", {}, t)))),
            h(
              "tbody",
              {},
              list.map((k) =>
                h(
                  "tr",
                  {},
                  h("td", {}, link(k.queue.name, "queues", k.queue.vhost, k.queue.name)),
                  h("td", {}, h("code", {}, k.consumer_tag)),
                  h("td", {}, k.ack_required ? "yes" : "no"),
                  h("td", { class: "numeric" }, String(k.prefetch_count)),
                  h("td", {}, brief(k.arguments)),
                ),
              ),
            ),
          )
        : h("p", { class: "empty" }, "No consumers."),
    );
  }

  return { title: `Channel ${name}`, element, refresh };
}
