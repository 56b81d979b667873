// The shell: login, the header with its tabs and vhost choice, the banner that says when
// the broker cannot be reached or is in alarm, and the router that shows one page at a
// time and refreshes it every few seconds.

import { h, fill } from "./dom.js";
import * as api from "./api.js";
import { describe } from "./forms.js";
import { match, tabs } from "./routes.js";
import { loginPage } from "./pages/login.js";

/** How often the page on show asks for fresh figures (the broker samples every 5 s). */
const REFRESH_MS = 5000;
const VHOST_KEY = "wharf.vhost";

const app = document.getElementById("app");
let shown = null;

/** The vhost the lists are narrowed to, or "" for all. */
export function chosenVhost() {
  return localStorage.getItem(VHOST_KEY) || "";
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const at = raw.indexOf("?");
  const pathPart = at < 0 ? raw : raw.slice(0, at);
  const search = new URLSearchParams(at < 0 ? "" : raw.slice(at + 1));
  try {
    return { segments: pathPart ? pathPart.split("/").map(decodeURIComponent) : [], search };
  } catch {
    return { segments: ["?"], search };
  }
}

function stopShown() {
  if (!shown) return;
  clearTimeout(shown.timer);
  shown.stopped = true;
  if (shown.page && shown.page.dispose) shown.page.dispose();
  shown = null;
}

function showLogin(notice) {
  stopShown();
  document.title = "Log in · Wharf";
  fill(app, loginPage(notice, () => start()));
}

function headerFor(session) {
  const vhostChoice = h("select", { id: "vhost", "aria-label": "Virtual host" }, h("option", { value: "" }, "All vhosts"));
  vhostChoice.addEventListener("change", () => {
    localStorage.setItem(VHOST_KEY, vhostChoice.value);
    route();
  });

  const logout = h("button", { id: "logout", type: "button", class: "secondary" }, "Log out");
  logout.addEventListener("click", () => api.logout());
  return h(
    "header",
    { class: "top" },
    h("a", { class: "brand", href: "#/" }, h("img", { src: "/ui/favicon.svg", alt: "" }), "Wharf"),
    h(
      "nav",
      { class: "tabs", "aria-label": "Pages" },
      tabs()
        .filter((tab) => tab.visible())
        .map((tab) => h("a", { href: tab.href, "data-tab": tab.id }, tab.label)),
    ),
    h(
      "div",
      { class: "who" },
      vhostChoice,
      h("span", { class: "user", title: session.tags.join(", ") || "no tags" }, session.name),
      logout,
    ),
  );
}

/** Fills the header's vhost menu; read again at each page shown, so a vhost added since
 *  is there. */
function listVhosts() {
  const menu = document.getElementById("vhost");
  if (!menu || document.activeElement === menu) return;
  api
    .get("/api/vhosts?columns=name")
    .then((vhosts) => {
      const names = vhosts.map((v) => v.name);
      const shown = [...menu.options].slice(1).map((o) => o.value);
      if (names.join("\n") !== shown.join("\n")) {
        fill(menu, h("option", { value: "" }, "All vhosts"), names.map((n) => h("option", { value: n }, n)));
      }
      menu.value = chosenVhost();
      if (menu.value !== chosenVhost()) {
        // The vhost chosen is gone: show every vhost's objects instead.
        localStorage.removeItem(VHOST_KEY);
        route();
      }
    })
    .catch(() => {});
}

/** Reads the user's tags again: changed since login, the tabs are redrawn. */
function checkTags() {
  api
    .get("/api/whoami")
    .then((me) => {
      if (api.updateTags(me.tags)) {
        const header = document.querySelector("header.top");
        if (header) header.replaceWith(headerFor(api.session()));
        route();
      }
    })
    .catch(() => {});
}

function shell(session) {
  fill(
    app,
    headerFor(session),
    h("div", { id: "banner", role: "status", hidden: true }),
    h("main", { id: "page" }),
    h("footer", {}, h("span", { id: "refreshed" }), h("span", {}, "Wharf")),
  );
}

let bannerTimer = null;

function showBanner(text, kind) {
  clearTimeout(bannerTimer);
  const banner = document.getElementById("banner");
  if (!banner) return;
  if (!text) {
    banner.hidden = true;
    return;
  }
  banner.className = kind;
  fill(banner, text);
  banner.hidden = false;
}

async function refresh(current) {
  if (current.stopped) return;
  try {
    if (current.page.refresh) await current.page.refresh();
    if (current.stopped) return;
    current.problem.hidden = true;
    const stamp = document.getElementById("refreshed");
    if (stamp) stamp.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (current.stopped) return;
    // A session that ended (in another tab too) shows the login form.
    if (!api.session()) {
      showLogin("Your session has ended: log in again.");
      return;
    }
    fill(current.problem, describe(error));
    current.problem.hidden = false;
  }
  if (!current.stopped) current.timer = setTimeout(() => refresh(current), REFRESH_MS);
}

async function route() {
  const session = api.session();
  if (!session) return showLogin();
  if (!document.getElementById("page")) shell(session);
  stopShown();
  listVhosts();
  checkTags();
  const { segments, search } = parseHash();
  const found = match(segments);
  const main = document.getElementById("page");
  for (const a of document.querySelectorAll("nav.tabs a")) {
    a.classList.toggle("active", found && a.dataset.tab === found.tab);
  }
  const current = { stopped: false, timer: null, page: null, problem: h("p", { class: "page-error", role: "alert", hidden: true }) };
  shown = current;
  if (!found) {
    document.title = "Not found · Wharf";
    fill(main, h("h1", {}, "Not found"), h("p", {}, "There is no such page. ", h("a", { href: "#/" }, "Go to the overview.")));
    return;
  }
  let page;
  try {
    const module = await found.load();
    if (current.stopped) return;
    page = module.page(found.params, { search, vhost: chosenVhost() });
  } catch (error) {
    fill(main, h("h1", {}, "This page failed"), h("p", { class: "page-error" }, describe(error)));
    return;
  }
  current.page = page;
  document.title = `${page.title} · Wharf`;
  fill(main, current.problem, page.element);
  await refresh(current);
}

function start() {
  fill(app);
  route();
}

api.events.addEventListener("session", (event) => showLogin(event.detail));
api.events.addEventListener("reachable", (event) => {
  if (event.detail) {
    showBanner("The broker answers again.", "ok");
    bannerTimer = setTimeout(() => showBanner(null), 4000);
  } else {
    showBanner(`The broker cannot be reached: retrying every ${REFRESH_MS / 1000} s…`, "alarm");
  }
});
window.addEventListener("hashchange", route);
// Logged out (or in) in another tab.
window.addEventListener("storage", (event) => {
  if (!api.isSessionKey(event.key)) return;
  if (!api.session()) showLogin("You have logged out in another tab.");
  else if (!document.getElementById("page")) start();
});
start();
