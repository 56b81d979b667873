// Definitions: every user, vhost, permission, policy, queue, exchange and binding as one
// JSON file, downloaded, or uploaded to add to the broker (as RabbitMQ's import: what
// exists with the same name is replaced, nothing is removed).

import { h, fill } from "../../dom.js";
import * as api from "../../api.js";
import { field, form, select } from "../../forms.js";

export function page(_params, { vhost }) {
  const status = h("p", { class: "outcome", "aria-live": "polite" });
  const exportForm = form(
    { class: "export" },
    [
      h("h2", {}, "Export definitions"),
      h("p", { class: "hint" }, "Users (with their password hashes), vhosts, permissions, policies, queues, exchanges and bindings; no messages."),
      h("button", { type: "submit" }, "Download"),
    ],
    async () => {
      const response = await api.request("GET", "/api/definitions", undefined, { raw: true });
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
      const anchor = h("a", { href: url, download: `wharf-definitions-${stamp}.json` });
      document.body.appendChild(anchor);
      anchor.click();
      anchor.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      return "Definitions downloaded.";
    },
  );
  const file = h("input", { type: "file", name: "file", accept: "application/json,.json" });
  const importForm = form(
    { class: "import" },
    [
      h("h2", {}, "Import definitions"),
      h("p", { class: "hint" }, "Adds what the file defines; objects of the same names are replaced, others are left as they are."),
      h("div", { class: "grid" }, field("File", file), field("Into", select("target", [["", "The whole broker"], ...(vhost ? [[vhost, `Only vhost ${vhost}`]] : [])], ""))),
      h("button", { type: "submit" }, "Upload"),
      status,
    ],
    async (v) => {
      const chosen = file.files[0];
      if (!chosen) throw new Error("Choose a definitions file.");
      const text = await chosen.text();
      try {
        JSON.parse(text);
      } catch (error) {
        throw new Error(`${chosen.name} is not JSON: ${error.message}`);
      }
      await api.request("POST", v.target ? api.apiPath("definitions", v.target) : "/api/definitions", text);
      fill(status, `Imported ${chosen.name}.`);
      status.className = "outcome ok";
      return "Definitions imported.";
    },
  );
  return { element: h("div", {}, h("h1", {}, "Definitions"), exportForm, importForm) };
}
