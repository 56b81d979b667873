// Bindings: the table of a queue's or an exchange's, with a button to remove each, and the
// form that adds one.

import { h, brief, link } from "./dom.js";
import * as api from "./api.js";
import { actionButton, confirmAction, field, form, keyValues, select, textInput } from "./forms.js";

function endpoint(kind, vhost, name) {
  if (!name) return "(default exchange)";
  return link(name, kind === "queue" ? "queues" : "exchanges", vhost, name);
}

/** A table of bindings; `show` picks the columns: "source" (a queue's bindings) or
 *  "destination" (an exchange's). */
export function bindingsTable(bindings, show, removed) {
  if (!bindings.length) return h("p", { class: "empty" }, "No bindings.");
  return h(
    "table",
    { class: "list bindings" },
    h(
      "thead",
      {},
      h("tr", {}, h("th", {}, show === "source" ? "From exchange" : "To"), h("th", {}, "Routing key"), h("th", {}, "Arguments"), h("th", {}, "")),
    ),
    h(
      "tbody",
      {},
      bindings.map((b) => {
        const isDefault = b.source === "";
        const remove = isDefault
          ? h("span", { class: "hint" }, "every queue has it")
          : actionButton(
              "Unbind",
              async () => {
                if (!(await confirmAction(`Remove the binding from ${b.source} with routing key "${b.routing_key}"?`, "Unbind"))) return null;
                const kind = b.destination_type === "queue" ? "q" : "e";
                await api.del(api.apiPath("bindings", b.vhost, "e", b.source, kind, b.destination, b.properties_key));
                removed();
                return "Binding removed.";
              },
              { class: "secondary small" },
            );
        const other = show === "source" ? endpoint("exchange", b.vhost, b.source) : [b.destination_type === "queue" ? "queue " : "exchange ", endpoint(b.destination_type, b.vhost, b.destination)];
        return h("tr", {}, h("td", {}, other), h("td", {}, h("code", {}, b.routing_key)), h("td", {}, brief(b.arguments)), h("td", {}, remove));
      }),
    ),
  );
}

/** Adds a binding: to this queue from an exchange named in the form, or from this
 *  exchange to a queue or exchange named in the form. */
export function bindForm(vhost, { queue, exchange }, added) {
  const args = keyValues("binding-arguments", [
    { key: "x-match", type: "string", hint: "Headers exchanges: all (default) or any." },
  ]);
  const fromQueue = Boolean(queue);
  return form(
    { class: "bind" },
    [
      h("h2", {}, fromQueue ? "Add a binding to this queue" : "Add a binding from this exchange"),
      h(
        "div",
        { class: "grid" },
        fromQueue ? field("From exchange", textInput("source", { required: true })) : field("To", select("destination_type", [["queue", "Queue"], ["exchange", "Exchange"]], "queue")),
        fromQueue ? null : field("Name", textInput("destination", { required: true })),
        field("Routing key", textInput("routing_key")),
      ),
      field("Arguments", args.element),
      h("button", { type: "submit" }, "Bind"),
    ],
    async (v) => {
      const source = fromQueue ? v.source.trim() : exchange;
      const destination = fromQueue ? queue : v.destination.trim();
      if (!source || !destination) throw new Error("Name the exchange and the destination.");
      const kind = fromQueue || v.destination_type === "queue" ? "q" : "e";
      await api.post(api.apiPath("bindings", vhost, "e", source, kind, destination), {
        routing_key: v.routing_key || "",
        arguments: args.value(),
      });
      added();
      return "Binding added.";
    },
  );
}
