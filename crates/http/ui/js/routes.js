// Which page each address shows, and the tabs of the header.

import { isAdministrator, isPolicymaker } from "./api.js";

const ROUTES = [
  { pattern: [], tab: "overview", load: () => import("./pages/overview.js") },
  { pattern: ["connections"], tab: "connections", load: () => import("./pages/connections.js") },
  { pattern: ["connections", ":name"], tab: "connections", load: () => import("./pages/connection.js") },
  { pattern: ["channels"], tab: "channels", load: () => import("./pages/channels.js") },
  { pattern: ["channels", ":name"], tab: "channels", load: () => import("./pages/channel.js") },
  { pattern: ["exchanges"], tab: "exchanges", load: () => import("./pages/exchanges.js") },
  { pattern: ["exchanges", ":vhost", ":name"], tab: "exchanges", load: () => import("./pages/exchange.js") },
  { pattern: ["queues"], tab: "queues", load: () => import("./pages/queues.js") },
  { pattern: ["queues", ":vhost", ":name"], tab: "queues", load: () => import("./pages/queue.js") },
  { pattern: ["admin"], tab: "admin", load: () => import("./pages/admin.js") },
  { pattern: ["admin", ":section"], tab: "admin", load: () => import("./pages/admin.js") },
  { pattern: ["admin", ":section", ":name"], tab: "admin", load: () => import("./pages/admin.js") },
];

/** The route for path segments, with the values of its ":" parts. */
export function match(segments) {
  for (const route of ROUTES) {
    if (route.pattern.length !== segments.length) continue;
    const params = {};
    const fits = route.pattern.every((part, i) => {
      if (part.startsWith(":")) {
        params[part.slice(1)] = segments[i];
        return true;
      }
      return part === segments[i];
    });
    if (fits) return { ...route, params };
  }
  return null;
}

export function tabs() {
  return [
    { id: "overview", label: "Overview", href: "#/", visible: () => true },
    { id: "connections", label: "Connections", href: "#/connections", visible: () => true },
    { id: "channels", label: "Channels", href: "#/channels", visible: () => true },
    { id: "exchanges", label: "Exchanges", href: "#/exchanges", visible: () => true },
    { id: "queues", label: "Queues", href: "#/queues", visible: () => true },
    { id: "admin", label: "Admin", href: "#/admin", visible: () => isAdministrator() || isPolicymaker() },
  ];
}
