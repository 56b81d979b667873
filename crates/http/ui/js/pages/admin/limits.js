// Limits: per-vhost limits (set on each vhost's page) and per-user limits.

import { h, fill, link } from "../../dom.js";
import * as api from "../../api.js";
import { actionButton, field, form, select } from "../../forms.js";

const USER_LIMITS = [
  ["max-connections", "Max connections"],
  ["max-channels", "Max channels (per connection)"],
];

function limitsTable(rows, kind) {
  if (!rows.length) return h("p", { class: "empty" }, "No limits set.");
  return h(
    "table",
    { class: `list ${kind}-limits` },
    h("thead", {}, h("tr", {}, [kind === "user" ? "User" : "Virtual host", "Limit", "Value", ""].map((t) => h("th", {}, t)))),
    h(
      "tbody",
      {},
      rows.flatMap((row) =>
        Object.entries(row.value).map(([key, value]) =>
          h(
            "tr",
            {},
            h("td", {}, kind === "user" ? link(row.user, "admin", "users", row.user) : link(row.vhost, "admin", "vhosts", row.vhost)),
            h("td", {}, key),
            h("td", { class: "numeric" }, String(value)),
            h(
              "td",
              {},
              actionButton(
                "Clear",
                async () => {
                  await api.del(api.apiPath(kind === "user" ? "user-limits" : "vhost-limits", kind === "user" ? row.user : row.vhost, key));
                  return `Limit ${key} cleared.`;
                },
                { class: "secondary small" },
              ),
            ),
          ),
        ),
      ),
    ),
  );
}

export function page() {
  const vhostLimits = h("div");
  const userLimits = h("div");
  const formArea = h("div");
  async function refresh() {
    const [v, u] = await Promise.all([api.get("/api/vhost-limits"), api.get("/api/user-limits")]);
    fill(vhostLimits, limitsTable(v, "vhost"));
    fill(userLimits, limitsTable(u, "user"));
    if (!formArea.firstChild) {
      const users = (await api.get("/api/users")).map((x) => x.name);
      formArea.appendChild(
        form(
          { class: "set-user-limit" },
          [
            h("h2", {}, "Set a user limit"),
            h(
              "div",
              { class: "grid" },
              field("User", select("user", users, users[0])),
              field("Limit", select("limit", USER_LIMITS, "max-connections")),
              field("Value", h("input", { type: "number", name: "value", min: 0 })),
            ),
            h("button", { type: "submit" }, "Set limit"),
          ],
          async (values) => {
            const value = Number(values.value);
            if (String(values.value).trim() === "" || !Number.isInteger(value) || value < 0) throw new Error("The value must be a whole number of 0 or more.");
            await api.put(api.apiPath("user-limits", values.user, values.limit), { value });
            await refresh();
            return "Limit set.";
          },
        ),
      );
    }
  }
  const element = h(
    "div",
    {},
    h("h1", {}, "Limits"),
    h("h2", {}, "Virtual host limits"),
    h("p", { class: "hint" }, "Set on each virtual host's page."),
    vhostLimits,
    h("h2", {}, "User limits"),
    userLimits,
    formArea,
  );
  return { element, refresh };
}
