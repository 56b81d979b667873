// One user: their tags and password, their permissions, deleting them.

import { h, fill, facts } from "../../dom.js";
import * as api from "../../api.js";
import { actionButton, confirmAction, field, form } from "../../forms.js";
import { permissionsSection } from "../../permissions.js";
import { tagsField, userBody } from "./users.js";

export function page({ name }) {
  const base = api.apiPath("users", name);
  const summary = h("div");
  const permissions = permissionsSection({ user: name });
  const editArea = h("div");
  let gone = false;
  const element = h(
    "div",
    { class: "user" },
    h("p", { class: "crumbs" }, h("a", { href: "#/admin/users" }, "Users")),
    h("h1", {}, "User ", h("code", {}, name)),
    summary,
    permissions.element,
    editArea,
    h(
      "section",
      { class: "danger-zone" },
      h("h2", {}, "Delete this user"),
      actionButton(
        "Delete",
        async () => {
          if (!(await confirmAction(`Delete the user ${name}? Their connections are closed.`, "Delete"))) return null;
          await api.del(base);
          gone = true;
          location.hash = "#/admin/users";
          return `User ${name} deleted.`;
        },
        { class: "danger", id: "delete" },
      ),
    ),
  );

  async function refresh() {
    if (gone) return;
    let user;
    try {
      user = await api.get(base);
    } catch (error) {
      if (error.status === 404) {
        fill(summary, h("p", { class: "alarm" }, `The user ${name} does not exist (any more).`));
        return;
      }
      throw error;
    }
    fill(summary, facts([["Tags", user.tags.join(", ") || "none"], ["Has password", user.password_hash ? "yes" : "no"]]));
    if (!editArea.firstChild) {
      editArea.appendChild(
        form(
          { class: "update-user" },
          [
            h("h2", {}, "Update this user"),
            h(
              "div",
              { class: "grid" },
              field("New password", h("input", { type: "password", name: "password", autocomplete: "new-password" }), "Leave empty to keep the password."),
              field("Password again", h("input", { type: "password", name: "password_again", autocomplete: "new-password" })),
              h("label", { class: "inline" }, h("input", { type: "checkbox", name: "no_password" }), "Remove the password"),
            ),
            tagsField(user.tags.join(", ")),
            h("button", { type: "submit" }, "Update user"),
          ],
          async (v) => {
            const keep = !v.password && !v.no_password;
            const body = keep ? { tags: v.tags.split(",").map((t) => t.trim()).filter(Boolean).join(",") } : userBody(v);
            await api.put(base, body);
            await refresh();
            return `User ${name} updated.`;
          },
        ),
      );
    }
    await permissions.refresh();
  }

  return { element, refresh };
}
