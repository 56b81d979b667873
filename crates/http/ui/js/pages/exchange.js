// One exchange: its rates, the bindings from and to it, publishing to it, deleting it.

import { h, fill, rate, brief, facts } from "../dom.js";
import * as api from "../api.js";
import { lineChart, draw, ratePoints, historyQuery, rangeChoice } from "../chart.js";
import { actionButton, confirmAction } from "../forms.js";
import { bindingsTable, bindForm } from "../bindings.js";
import { publishForm } from "../messages.js";
import { DEFAULT_EXCHANGE, displayName, features } from "./exchanges.js";


export function page({ vhost, name }) {
  const apiName = name === "" ? DEFAULT_EXCHANGE : name;
  const base = api.apiPath("exchanges", vhost, apiName);
  const isDefault = apiName === DEFAULT_EXCHANGE;
  const builtIn = isDefault || apiName.startsWith("amq.");
  const summary = h("div");
  const rates = lineChart([], rate, { title: "Message rates" });
  const outgoing = h("div");
  const incoming = h("div");
  let gone = false;

  const reload = () => refreshBindings().catch(() => {});
  async function refreshBindings() {
    if (isDefault) {
      fill(outgoing, h("p", { class: "hint" }, "The default exchange routes to the queue named by the routing key; it cannot be bound."));
      return;
    }
    const [from, to] = await Promise.all([api.get(`${base}/bindings/source`), api.get(`${base}/bindings/destination`)]);
    fill(outgoing, bindingsTable(from, "destination", reload));
    fill(incoming, to.length ? [h("h3", {}, "Bound to this exchange"), bindingsTable(to, "source", reload)] : null);
  }

  const remove = builtIn
    ? null
    : h(
        "section",
        { class: "danger-zone" },
        h("h2", {}, "Delete"),
        actionButton(
          "Delete",
          async () => {
            if (!(await confirmAction(`Delete the exchange ${name} and its bindings?`, "Delete"))) return null;
            await api.del(base);
            gone = true;
            location.hash = "#/exchanges";
            return `Exchange ${name} deleted.`;
          },
          { class: "danger", id: "delete" },
        ),
      );

  const element = h(
    "div",
    { class: "exchange" },
    h("p", { class: "crumbs" }, h("a", { href: "#/exchanges" }, "Exchanges"), " / ", vhost),
    h("div", { class: "title" }, h("h1", {}, "Exchange ", h("code", {}, displayName(isDefault ? "" : name))), rangeChoice(() => refresh().catch(() => {}))),
    summary,
    h("div", { class: "charts" }, rates),
    h("h2", {}, "Bindings"),
    outgoing,
    incoming,
    isDefault ? null : bindForm(vhost, { exchange: apiName }, reload),
    publishForm(vhost, apiName, null),
    remove,
  );

  let asked = 0;
  async function refresh() {
    if (gone) return;
    // Only the latest refresh draws.
    const ticket = ++asked;
    let e;
    try {
      e = await api.get(`${base}?${historyQuery("msg_rates")}`);
      if (ticket !== asked) return;
    } catch (error) {
      if (error.status === 404) {
        fill(summary, h("p", { class: "alarm" }, `The exchange ${name} in ${vhost} does not exist (any more).`));
        return;
      }
      throw error;
    }
    const stats = e.message_stats || {};
    fill(
      summary,
      facts([
        ["Virtual host", e.vhost],
        ["Type", e.type],
        ["Features", h("span", {}, features(e))],
        ["Policy", e.policy || ""],
        ["Arguments", brief(e.arguments)],
        ["Rate in", rate(stats.publish_in_details?.rate ?? 0)],
        ["Rate out", rate(stats.publish_out_details?.rate ?? 0)],
      ]),
    );
    draw(
      rates,
      [
        { label: "In", points: ratePoints(stats.publish_in_details), latest: stats.publish_in_details?.rate ?? 0 },
        { label: "Out", points: ratePoints(stats.publish_out_details), latest: stats.publish_out_details?.rate ?? 0 },
      ],
      rate,
      170,
      "Message rates",
    );
    await refreshBindings();
  }

  return { title: `Exchange ${displayName(isDefault ? "" : name)}`, element, refresh };
}
