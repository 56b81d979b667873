// The Admin tab: users, vhosts, policies, limits and definitions, each a section with its
// own address (#/admin/users, #/admin/users/<name>...). Administrators see every section;
// a policymaker sees the policies.

import { h } from "../dom.js";
import { isAdministrator, isPolicymaker } from "../api.js";

const SECTIONS = [
  { id: "users", label: "Users", admin: true, list: () => import("./admin/users.js"), one: () => import("./admin/user.js") },
  { id: "vhosts", label: "Virtual hosts", admin: true, list: () => import("./admin/vhosts.js"), one: () => import("./admin/vhost.js") },
  { id: "policies", label: "Policies", admin: false, list: () => import("./admin/policies.js") },
  { id: "limits", label: "Limits", admin: true, list: () => import("./admin/limits.js") },
  { id: "definitions", label: "Definitions", admin: true, list: () => import("./admin/definitions.js") },
];

function allowed(section) {
  return section.admin ? isAdministrator() : isAdministrator() || isPolicymaker();
}

export function page({ section, name }, context) {
  const visible = SECTIONS.filter(allowed);
  const chosen = visible.find((s) => s.id === (section || visible[0]?.id));
  const nav = h(
    "nav",
    { class: "subtabs", "aria-label": "Admin sections" },
    visible.map((s) => h("a", { href: `#/admin/${s.id}`, class: s === chosen ? "active" : null, "data-section": s.id }, s.label)),
  );
  const body = h("div");
  const element = h("div", { class: "admin" }, nav, body);
  if (!chosen) {
    body.appendChild(h("p", { class: "page-error" }, section ? "There is no such section, or your tags do not let you see it." : "Your tags do not let you see the Admin sections."));
    return { title: "Admin", element };
  }
  let inner = null;
  const loader = name !== undefined && chosen.one ? chosen.one : chosen.list;
  const ready = loader().then((module) => {
    inner = module.page({ name }, context);
    body.appendChild(inner.element);
    return inner;
  });
  return {
    title: `${chosen.label} · Admin`,
    element,
    refresh: async () => {
      const page = inner || (await ready);
      if (page.refresh) await page.refresh();
    },
  };
}
