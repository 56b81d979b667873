// The login form: a user's name and password are exchanged for a session token.

import { h } from "../dom.js";
import * as api from "../api.js";
import { describe } from "../forms.js";

export function loginPage(notice, loggedIn) {
  const problem = h("p", { class: "form-error", role: "alert", hidden: !notice }, notice || "");
  const username = h("input", { type: "text", name: "username", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit" }, "Log in");
  const form = h(
    "form",
    { id: "login", class: "login" },
    h("div", { class: "brand" }, h("img", { src: "/ui/favicon.svg", alt: "" }), "Wharf"),
    h("label", { class: "field" }, h("span", { class: "label" }, "Username"), username),
    h("label", { class: "field" }, h("span", { class: "label" }, "Password"), password),
    submit,
    problem,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    problem.hidden = true;
    try {
      await api.login(username.value, password.value);
      loggedIn();
    } catch (error) {
      problem.textContent =
        error.status === 401 ? (error.message === "Login failed" ? "Wrong username or password." : error.message) : describe(error);
      problem.hidden = false;
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  requestAnimationFrame(() => username.focus());
  return h("div", { class: "login-page" }, form);
}
