// Users: the list with their tags and where they may go, and the form that adds one.

import { h, fill, link } from "../../dom.js";
import * as api from "../../api.js";
import { field, form, textInput } from "../../forms.js";

export const TAGS = [
  ["administrator", "Everything: users, vhosts, permissions, policies, every object."],
  ["monitoring", "Sees every connection, channel and vhost, and the node."],
  ["policymaker", "Manages the policies of the vhosts it has permissions in."],
  ["management", "Uses the management UI and API for the vhosts it has permissions in."],
  ["impersonator", "May publish with another user's user_id."],
];

/** A text field of comma-separated tags with a button per known tag. */
export function tagsField(value = "") {
  const input = textInput("tags", { value, placeholder: "administrator, monitoring…" });
  const add = (tag) => {
    const tags = input.value.split(",").map((t) => t.trim()).filter(Boolean);
    if (!tags.includes(tag)) tags.push(tag);
    input.value = tags.join(", ");
  };
  return field(
    "Tags",
    h("div", {}, input, h("p", { class: "hint suggestions" }, "Add: ", TAGS.map(([tag, hint]) => h("button", { type: "button", class: "link", title: hint, onclick: () => add(tag) }, tag)))),
    "Comma separated. Without a management tag a user cannot log in here.",
  );
}

export function userBody(v) {
  const body = { tags: v.tags.split(",").map((t) => t.trim()).filter(Boolean).join(",") };
  if (v.no_password) return { ...body, password_hash: "" };
  if (!v.password) throw new Error("Give a password, or choose no password.");
  if (v.password !== v.password_again) throw new Error("The two passwords differ.");
  return { ...body, password: v.password };
}

export function page() {
  const list = h("div");
  const element = h(
    "div",
    {},
    h("h1", {}, "Users"),
    list,
    form(
      { class: "add-user" },
      [
        h("h2", {}, "Add a user"),
        h(
          "div",
          { class: "grid" },
          field("Username", textInput("name", { required: true, autocomplete: "off" })),
          field("Password", h("input", { type: "password", name: "password", autocomplete: "new-password" })),
          field("Password again", h("input", { type: "password", name: "password_again", autocomplete: "new-password" })),
          h("label", { class: "inline" }, h("input", { type: "checkbox", name: "no_password" }), "No password (client certificates only)"),
        ),
        tagsField(),
        h("button", { type: "submit" }, "Add user"),
      ],
      async (v, formElement) => {
        const name = v.name.trim();
        if (!name) throw new Error("A user needs a name.");
        await api.put(api.apiPath("users", name), userBody(v));
        formElement.reset();
        await refresh();
        return `User ${name} added.`;
      },
    ),
  );

  async function refresh() {
    const [users, permissions] = await Promise.all([api.get("/api/users"), api.get("/api/permissions")]);
    fill(
      list,
      h(
        "table",
        { class: "list users" },
        h("thead", {}, h("tr", {}, ["Name", "Tags", "Can access virtual hosts", "Has password"].map((t) => h("th", {}, t)))),
        h(
          "tbody",
          {},
          users.map((u) =>
            h(
              "tr",
              { "data-id": u.name },
              h("td", {}, link(u.name, "admin", "users", u.name)),
              h("td", {}, (Array.isArray(u.tags) ? u.tags : String(u.tags || "").split(",")).filter(Boolean).join(", ")),
              h("td", {}, permissions.filter((p) => p.user === u.name).map((p) => p.vhost).join(", ") || h("span", { class: "hint" }, "none")),
              h("td", {}, u.password_hash ? "yes" : "no"),
            ),
          ),
        ),
      ),
    );
  }

  return { element, refresh };
}
