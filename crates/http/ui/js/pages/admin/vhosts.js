// Virtual hosts: the list with their messages and limits, and the form that adds one.

import { h, fill, count, rate, link } from "../../dom.js";
import * as api from "../../api.js";
import { field, form, textInput } from "../../forms.js";

export function page() {
  const list = h("div");
  const element = h(
    "div",
    {},
    h("h1", {}, "Virtual hosts"),
    list,
    form(
      { class: "add-vhost" },
      [
        h("h2", {}, "Add a virtual host"),
        h(
          "div",
          { class: "grid" },
          field("Name", textInput("name", { required: true })),
          field("Description", textInput("description")),
          field("Tags", textInput("tags"), "Comma separated."),
        ),
        h("button", { type: "submit" }, "Add virtual host"),
      ],
      async (v, formElement) => {
        const name = v.name.trim();
        if (!name) throw new Error("A virtual host needs a name.");
        await api.put(api.apiPath("vhosts", name), { description: v.description, tags: v.tags });
        formElement.reset();
        await refresh();
        return `Virtual host ${name} added (with full permissions for you).`;
      },
    ),
  );

  async function refresh() {
    const [vhosts, limits] = await Promise.all([api.get("/api/vhosts"), api.get("/api/vhost-limits")]);
    const limitsOf = (name) => {
      const found = limits.find((l) => l.vhost === name);
      return found ? Object.entries(found.value).map(([k, v]) => `${k}: ${v}`).join(", ") : "";
    };
    fill(
      list,
      h(
        "table",
        { class: "list vhosts" },
        h(
          "thead",
          {},
          h("tr", {}, ["Name", "Description", "Tags", "Limits", "Ready", "Unacked", "Total", "Publish", "Deliver / get"].map((t) => h("th", {}, t))),
        ),
        h(
          "tbody",
          {},
          vhosts.map((v) =>
            h(
              "tr",
              { "data-id": v.name },
              h("td", {}, link(v.name, "admin", "vhosts", v.name)),
              h("td", {}, v.description || ""),
              h("td", {}, (v.tags || []).join(", ")),
              h("td", {}, limitsOf(v.name)),
              h("td", { class: "numeric" }, count(v.messages_ready ?? 0)),
              h("td", { class: "numeric" }, count(v.messages_unacknowledged ?? 0)),
              h("td", { class: "numeric" }, count(v.messages ?? 0)),
              h("td", { class: "numeric" }, rate(v.message_stats?.publish_details?.rate ?? 0)),
              h("td", { class: "numeric" }, rate(v.message_stats?.deliver_get_details?.rate ?? 0)),
            ),
          ),
        ),
      ),
    );
  }

  return { element, refresh };
}
