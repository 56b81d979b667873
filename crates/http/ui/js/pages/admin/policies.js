// Policies: which queues and exchanges get which settings, and the form that sets one,
// with what each definition key does.

import { h, fill, brief } from "../../dom.js";
import * as api from "../../api.js";
import { actionButton, confirmAction, field, form, keyValues, select, textInput } from "../../forms.js";

/** The definition keys Wharf acts on, with their types and effects. */
export const POLICY_KEYS = [
  { key: "message-ttl", type: "number", hint: "Queues: how long (ms) a message may wait before it is discarded or dead-lettered." },
  { key: "expires", type: "number", hint: "Queues: how long (ms) a queue may go unused before it is deleted." },
  { key: "max-length", type: "number", hint: "Queues: how many ready messages the queue holds at most." },
  { key: "max-length-bytes", type: "number", hint: "Queues: how many bytes of ready message bodies it holds at most." },
  { key: "overflow", type: "string", hint: "Queues: drop-head, reject-publish or reject-publish-dlx once full." },
  { key: "dead-letter-exchange", type: "string", hint: "Queues: where rejected, expired or dropped messages are republished." },
  { key: "dead-letter-routing-key", type: "string", hint: "Queues: the routing key dead-lettered messages get." },
  { key: "delivery-limit", type: "number", hint: "Quorum queues: redeliveries before a message is dropped or dead-lettered." },
  { key: "queue-mode", type: "string", hint: "Queues: accepted for compatibility (lazy); Wharf pages messages to disk as needed anyway." },
  { key: "alternate-exchange", type: "string", hint: "Exchanges: where messages the exchange cannot route go instead." },
];

export function page(_params, { vhost }) {
  const list = h("div");
  const definition = keyValues("definition", POLICY_KEYS);
  const formArea = h("div");

  function policyForm(vhosts) {
    return form(
      { class: "set-policy" },
      [
        h("h2", {}, "Add or update a policy"),
        h(
          "div",
          { class: "grid" },
          field("Virtual host", select("vhost", vhosts, vhost || vhosts[0])),
          field("Name", textInput("name", { required: true })),
          field("Pattern", textInput("pattern", { value: "^", required: true }), "A regular expression matched against queue or exchange names."),
          field("Apply to", select("apply-to", [["all", "Exchanges and queues"], ["queues", "Queues"], ["exchanges", "Exchanges"]], "queues")),
          field("Priority", h("input", { type: "number", name: "priority", value: 0 }), "Of the policies that match, the highest priority applies."),
        ),
        field("Definition", definition.element),
        h("button", { type: "submit" }, "Save policy"),
      ],
      async (v) => {
        const name = v.name.trim();
        if (!name) throw new Error("A policy needs a name.");
        const body = definition.value();
        if (!Object.keys(body).length) throw new Error("A policy needs at least one definition key.");
        await api.put(api.apiPath("policies", v.vhost, name), {
          pattern: v.pattern,
          definition: body,
          priority: Number(v.priority) || 0,
          "apply-to": v["apply-to"],
        });
        await refresh();
        return `Policy ${name} saved.`;
      },
    );
  }

  async function refresh() {
    const policies = await api.get(vhost ? api.apiPath("policies", vhost) : "/api/policies");
    fill(
      list,
      policies.length
        ? h(
            "table",
            { class: "list policies" },
            h("thead", {}, h("tr", {}, ["Virtual host", "Name", "Pattern", "Apply to", "Definition", "Priority", ""].map((t) => h("th", {}, t)))),
            h(
              "tbody",
              {},
              policies.map((p) =>
                h(
                  "tr",
                  { "data-id": `${p.vhost}/${p.name}` },
                  h("td", {}, p.vhost),
                  h("td", {}, p.name),
                  h("td", {}, h("code", {}, p.pattern)),
                  h("td", {}, p["apply-to"]),
                  h("td", {}, brief(p.definition)),
                  h("td", { class: "numeric" }, String(p.priority)),
                  h(
                    "td",
                    {},
                    actionButton(
                      "Delete",
                      async () => {
                        if (!(await confirmAction(`Delete the policy ${p.name} in ${p.vhost}?`, "Delete"))) return null;
                        await api.del(api.apiPath("policies", p.vhost, p.name));
                        await refresh();
                        return `Policy ${p.name} deleted.`;
                      },
                      { class: "secondary small" },
                    ),
                  ),
                ),
              ),
            ),
          )
        : h("p", { class: "empty" }, "No policies."),
    );
    if (!formArea.firstChild) {
      const vhosts = (await api.get("/api/vhosts?columns=name")).map((v) => v.name);
      formArea.appendChild(policyForm(vhosts));
    }
  }

  const element = h("div", {}, h("h1", {}, "Policies"), list, formArea);
  return { element, refresh };
}
