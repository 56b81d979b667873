// Permissions and topic permissions: tables of them (for a user or for a vhost) and the
// forms that set them, shared by the user and vhost pages.

import { h, fill, link } from "./dom.js";
import * as api from "./api.js";
import { actionButton, confirmAction, field, form, select, textInput } from "./forms.js";

/** Tables and forms of the permissions of one user (`user`) or in one vhost (`vhost`). */
export function permissionsSection({ user, vhost }) {
  const table = h("div");
  const topicTable = h("div");
  const choices = h("div");
  const other = user ? "vhost" : "user";
  const otherLabel = user ? "Virtual host" : "User";

  const clear = (kind, p) =>
    actionButton(
      "Clear",
      async () => {
        if (!(await confirmAction(`Clear the ${kind === "permissions" ? "" : "topic "}permissions of ${p.user} in ${p.vhost}?`, "Clear"))) return null;
        await api.del(api.apiPath(kind === "permissions" ? "permissions" : "topic-permissions", p.vhost, p.user));
        await refresh();
        return "Permissions cleared.";
      },
      { class: "secondary small" },
    );

  function rows(list, kind, columns) {
    if (!list.length) return h("p", { class: "empty" }, kind === "permissions" ? "No permissions." : "No topic permissions.");
    return h(
      "table",
      { class: `list ${kind}` },
      h("thead", {}, h("tr", {}, [otherLabel, ...columns.map(([, label]) => label), ""].map((t) => h("th", {}, t)))),
      h(
        "tbody",
        {},
        list.map((p) =>
          h(
            "tr",
            { "data-id": p[other] },
            h("td", {}, other === "vhost" ? link(p.vhost, "admin", "vhosts", p.vhost) : link(p.user, "admin", "users", p.user)),
            columns.map(([key]) => h("td", {}, h("code", {}, p[key]))),
            h("td", {}, clear(kind, p)),
          ),
        ),
      ),
    );
  }

  function setForms(names) {
    const pick = () => select(other, names, names[0]);
    const target = (v) => ({ vhost: vhost || v.vhost, user: user || v.user });
    return [
      form(
        { class: "set-permission" },
        [
          h("h3", {}, "Set permission"),
          h(
            "div",
            { class: "grid" },
            field(otherLabel, pick()),
            field("Configure regexp", textInput("configure", { value: ".*" })),
            field("Write regexp", textInput("write", { value: ".*" })),
            field("Read regexp", textInput("read", { value: ".*" })),
          ),
          h("button", { type: "submit" }, "Set permission"),
        ],
        async (v) => {
          const t = target(v);
          await api.put(api.apiPath("permissions", t.vhost, t.user), { configure: v.configure, write: v.write, read: v.read });
          await refresh();
          return `Permissions of ${t.user} in ${t.vhost} set.`;
        },
      ),
      form(
        { class: "set-topic-permission" },
        [
          h("h3", {}, "Set topic permission"),
          h(
            "div",
            { class: "grid" },
            field(otherLabel, pick()),
            field("Exchange", textInput("exchange", { value: "amq.topic" })),
            field("Write regexp", textInput("write", { value: ".*" })),
            field("Read regexp", textInput("read", { value: ".*" })),
          ),
          h("button", { type: "submit" }, "Set topic permission"),
        ],
        async (v) => {
          const t = target(v);
          await api.put(api.apiPath("topic-permissions", t.vhost, t.user), { exchange: v.exchange, write: v.write, read: v.read });
          await refresh();
          return `Topic permissions of ${t.user} in ${t.vhost} set.`;
        },
      ),
    ];
  }

  const owner = user ? ["users", user] : ["vhosts", vhost];
  let formsShown = false;
  async function refresh() {
    const [permissions, topics] = await Promise.all([
      api.get(api.apiPath(...owner, "permissions")),
      api.get(api.apiPath(...owner, "topic-permissions")),
    ]);
    fill(table, rows(permissions, "permissions", [["configure", "Configure"], ["write", "Write"], ["read", "Read"]]));
    fill(topicTable, rows(topics, "topic-permissions", [["exchange", "Exchange"], ["write", "Write"], ["read", "Read"]]));
    if (!formsShown) {
      formsShown = true;
      const names = (await api.get(user ? "/api/vhosts?columns=name" : "/api/users")).map((o) => o.name);
      fill(choices, setForms(names));
    }
  }

  const element = h("section", { class: "permissions" }, h("h2", {}, "Permissions"), table, h("h2", {}, "Topic permissions"), topicTable, choices);
  return { element, refresh };
}
