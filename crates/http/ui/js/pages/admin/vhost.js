// One virtual host: its figures, its limits, who may use it, deleting it.

import { h, fill, count, facts } from "../../dom.js";
import * as api from "../../api.js";
import { actionButton, confirmAction, field, form } from "../../forms.js";
import { permissionsSection } from "../../permissions.js";

const LIMITS = [
  ["max-connections", "Max connections", "How many client connections the vhost accepts (empty: no limit)."],
  ["max-queues", "Max queues", "How many queues it may hold (empty: no limit)."],
];

export function page({ name }) {
  const base = api.apiPath("vhosts", name);
  const summary = h("div");
  const permissions = permissionsSection({ vhost: name });
  const limitsArea = h("div");
  let gone = false;
  const element = h(
    "div",
    { class: "vhost" },
    h("p", { class: "crumbs" }, h("a", { href: "#/admin/vhosts" }, "Virtual hosts")),
    h("h1", {}, "Virtual host ", h("code", {}, name)),
    summary,
    limitsArea,
    permissions.element,
    h(
      "section",
      { class: "danger-zone" },
      h("h2", {}, "Delete this virtual host"),
      actionButton(
        "Delete",
        async () => {
          if (!(await confirmAction(`Delete the virtual host ${name}, with every queue, exchange and message in it?`, "Delete"))) return null;
          await api.del(base);
          gone = true;
          location.hash = "#/admin/vhosts";
          return `Virtual host ${name} deleted.`;
        },
        { class: "danger", id: "delete" },
      ),
    ),
  );

  function limitsForm(current) {
    return form(
      { class: "limits" },
      [
        h("h2", {}, "Limits"),
        h(
          "div",
          { class: "grid" },
          LIMITS.map(([key, label, hint]) => field(label, h("input", { type: "number", name: key, min: 0, value: current[key] ?? "" }), hint)),
        ),
        h("button", { type: "submit" }, "Save limits"),
      ],
      async (v) => {
        // Every value is checked before any is saved.
        const wanted = LIMITS.map(([key]) => {
          const text = String(v[key] ?? "").trim();
          const value = Number(text);
          if (text !== "" && (!Number.isInteger(value) || value < 0)) throw new Error(`${key} must be a whole number of 0 or more.`);
          return [key, text === "" ? null : value];
        });
        for (const [key, value] of wanted) {
          if (value === null) {
            if (current[key] !== undefined) await api.del(api.apiPath("vhost-limits", name, key));
          } else {
            await api.put(api.apiPath("vhost-limits", name, key), { value });
          }
        }
        await refresh(true);
        return "Limits saved.";
      },
    );
  }

  async function refresh(redrawLimits) {
    if (gone) return;
    let vhost;
    try {
      vhost = await api.get(base);
    } catch (error) {
      if (error.status === 404) {
        fill(summary, h("p", { class: "alarm" }, `The virtual host ${name} does not exist (any more).`));
        return;
      }
      throw error;
    }
    fill(
      summary,
      facts([
        ["Description", vhost.description],
        ["Tags", (vhost.tags || []).join(", ")],
        ["Ready", count(vhost.messages_ready ?? 0)],
        ["Unacked", count(vhost.messages_unacknowledged ?? 0)],
        ["Total", count(vhost.messages ?? 0)],
      ]),
    );
    if (redrawLimits === true || !limitsArea.firstChild) {
      const limits = await api.get(api.apiPath("vhost-limits", name));
      fill(limitsArea, limitsForm(limits.length ? limits[0].value : {}));
    }
    await permissions.refresh();
  }

  return { element, refresh };
}
