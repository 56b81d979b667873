// The exchanges: the list with their rates, and a form to declare one.

import { h, rate, link } from "../dom.js";
import * as api from "../api.js";
import { pagedTable } from "../table.js";
import { field, form, keyValues, select, textInput } from "../forms.js";

/** The name the default exchange is shown (and linked) by. */
export const DEFAULT_EXCHANGE = "amq.default";

export function displayName(name) {
  return name === "" ? "(AMQP default)" : name;
}

export function features(e) {
  const marks = [];
  if (e.durable) marks.push(["D", "durable"]);
  if (e.auto_delete) marks.push(["AD", "auto-delete"]);
  if (e.internal) marks.push(["I", "internal"]);
  for (const [key, value] of Object.entries(e.arguments || {})) marks.push([key, `${key}: ${JSON.stringify(value)}`]);
  if (e.policy) marks.push([`Policy ${e.policy}`, "policy applied"]);
  return marks.map(([text, title]) => h("abbr", { class: "feature", title }, text));
}

const EXCHANGE_ARGUMENTS = [
  { key: "alternate-exchange", type: "string", label: "Alternate exchange", hint: "Where messages this exchange cannot route go instead." },
  { key: "x-delayed-type", type: "string", label: "Delayed type", hint: "x-delayed-message exchanges: how they route once the delay is over (direct, topic…)." },
];

function declareForm(vhosts, chosen, types, declared) {
  const args = keyValues("exchange-arguments", EXCHANGE_ARGUMENTS);
  return form(
    { class: "declare" },
    [
      h("h2", {}, "Add an exchange"),
      h(
        "div",
        { class: "grid" },
        field("Virtual host", select("vhost", vhosts, chosen || vhosts[0])),
        field("Name", textInput("name", { required: true })),
        field("Type", select("type", types, "direct")),
        field("Durability", select("durable", [["true", "Durable"], ["false", "Transient"]], "true")),
        field("Auto delete", select("auto_delete", [["false", "No"], ["true", "Yes"]], "false"), "Deleted when its last binding goes."),
        field("Internal", select("internal", [["false", "No"], ["true", "Yes"]], "false"), "Clients cannot publish to it, only other exchanges."),
      ),
      field("Arguments", args.element),
      h("button", { type: "submit" }, "Add exchange"),
    ],
    async (v) => {
      const name = v.name.trim();
      if (!name) throw new Error("An exchange needs a name.");
      await api
        .put(api.apiPath("exchanges", v.vhost, name), {
          type: v.type,
          durable: v.durable === "true",
          auto_delete: v.auto_delete === "true",
          internal: v.internal === "true",
          arguments: args.value(),
        })
        .catch((error) => {
          // The API says only "Access refused." for a new name in the broker's own space.
          if (error.status === 401 && name.startsWith("amq.")) {
            throw new Error("Access refused: names starting with amq. are reserved for the broker's own exchanges.");
          }
          throw error;
        });
      declared();
      return `Exchange ${name} added.`;
    },
  );
}

export function page(_params, { search, vhost }) {
  const columns = [
    vhost ? null : { key: "vhost", label: "Virtual host", sort: "vhost", cell: (e) => e.vhost },
    { key: "name", label: "Name", sort: "name", cell: (e) => link(displayName(e.name), "exchanges", e.vhost, e.name || DEFAULT_EXCHANGE) },
    { key: "type", label: "Type", sort: "type", cell: (e) => e.type },
    { key: "features", label: "Features", sort: null, cell: features },
    { key: "in", label: "Rate in", sort: "message_stats.publish_in_details.rate", numeric: true, cell: (e) => rate(e.message_stats?.publish_in_details?.rate ?? 0) },
    { key: "out", label: "Rate out", sort: "message_stats.publish_out_details.rate", numeric: true, cell: (e) => rate(e.message_stats?.publish_out_details?.rate ?? 0) },
  ].filter(Boolean);
  const table = pagedTable({
    columns,
    search,
    source: () => (vhost ? api.apiPath("exchanges", vhost) : "/api/exchanges"),
    rowId: (e) => `${e.vhost}/${e.name}`,
  });
  const declareArea = h("div");
  Promise.all([api.get("/api/vhosts?columns=name"), api.get("/api/overview?columns=exchange_types")])
    .then(([vhosts, overview]) => {
      const types = (overview.exchange_types || []).map((t) => t.name);
      declareArea.appendChild(declareForm(vhosts.map((v) => v.name), vhost, types.length ? types : ["direct", "fanout", "topic", "headers"], () => table.load()));
    })
    .catch(() => {});
  const element = h("div", {}, h("h1", {}, "Exchanges", vhost ? h("small", {}, ` in ${vhost}`) : null), table.element, declareArea);
  return { title: "Exchanges", element, refresh: table.load };
}
