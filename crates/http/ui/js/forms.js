// Forms, confirmations and notices: the pieces every page that changes something uses.

import { h, fill } from "./dom.js";
import { ApiError } from "./api.js";

/** A short notice in the corner, gone after a few seconds. */
export function toast(message, kind = "ok") {
  const area = document.getElementById("toasts");
  if (!area) return;
  const notice = h("div", { class: ["toast", kind], role: kind === "error" ? "alert" : "status" }, message);
  area.appendChild(notice);
  setTimeout(() => notice.remove(), kind === "error" ? 10000 : 5000);
}

/** A readable sentence for an error thrown by a request. */
export function describe(error) {
  if (error instanceof ApiError) {
    if (error.status === 0) return "The broker cannot be reached.";
    // RabbitMQ's API (and so Wharf's) says only this when permissions refuse.
    if (error.message === "Access refused.") return "Access refused: your permissions in this vhost do not allow it.";
    return error.message || `The broker answered ${error.status}.`;
  }
  return String(error && error.message ? error.message : error);
}

/** Asks before something that cannot be undone: resolves true when confirmed. */
export function confirmAction(question, action = "Delete") {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm" },
      h(
        "form",
        { method: "dialog" },
        h("p", {}, question),
        h(
          "div",
          { class: "buttons" },
          h("button", { value: "cancel", class: "secondary" }, "Cancel"),
          h("button", { value: "confirm", class: "danger" }, action),
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "confirm");
      dialog.remove();
    });
    document.body.appendChild(dialog);
    dialog.showModal();
  });
}

/** A labelled control, with a hint under it. */
export function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "label" }, label), control, hint ? h("small", { class: "hint" }, hint) : null);
}

export function textInput(name, attributes = {}) {
  return h("input", { type: "text", name, autocomplete: "off", ...attributes });
}

export function select(name, options, selected) {
  return h(
    "select",
    { name },
    options.map((option) => {
      const [value, label] = Array.isArray(option) ? option : [option, option];
      return h("option", { value, selected: value === selected }, label);
    }),
  );
}

/** A form whose submission runs `action(values)`: the button is disabled meanwhile, an
 *  error is shown in the form, a success as a notice (the text `action` resolves to). */
export function form(attributes, children, action) {
  const problem = h("p", { class: "form-error", role: "alert", hidden: true });
  const element = h("form", { ...attributes, novalidate: true }, children, problem);
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const buttons = element.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    problem.hidden = true;
    try {
      const done = await action(values(element), element);
      if (done) toast(done);
    } catch (error) {
      fill(problem, describe(error));
      problem.hidden = false;
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
  return element;
}

/** A form's named controls' values: checkboxes as booleans. */
export function values(formElement) {
  const result = {};
  for (const control of formElement.querySelectorAll("[name]")) {
    if (control.closest(".rows")) continue;
    result[control.name] = control.type === "checkbox" ? control.checked : control.value;
  }
  return result;
}

/** A value typed in a table of arguments or headers: text, a number, a boolean or a
 *  list (comma separated). */
function typed(text, type) {
  switch (type) {
    case "number": {
      const n = Number(text);
      if (text.trim() === "" || Number.isNaN(n)) throw new Error(`"${text}" is not a number`);
      return n;
    }
    case "boolean":
      if (!["true", "false"].includes(text.trim())) throw new Error(`"${text}" is not true or false`);
      return text.trim() === "true";
    case "list":
      return text.split(",").map((s) => s.trim()).filter(Boolean);
    default:
      return text;
  }
}

/** Rows of key = value with a type each (queue arguments, message headers, policy
 *  definitions), growing as they are filled; `suggestions` are offered as keys with
 *  their types and hints. */
export function keyValues(name, suggestions = []) {
  const list = h("datalist", { id: `${name}-keys` }, suggestions.map((s) => h("option", { value: s.key }, s.hint)));
  const rows = h("div", { class: "rows", "data-name": name });
  const guessType = (key) => suggestions.find((s) => s.key === key)?.type;
  const addRow = () => {
    const key = h("input", { type: "text", class: "key", list: `${name}-keys`, placeholder: "key", "aria-label": `${name} key` });
    const value = h("input", { type: "text", class: "value", placeholder: "value", "aria-label": `${name} value` });
    const type = select("type", [["string", "String"], ["number", "Number"], ["boolean", "Boolean"], ["list", "List"]], "string");
    type.setAttribute("aria-label", `${name} type`);
    key.addEventListener("change", () => {
      const guessed = guessType(key.value.trim());
      if (guessed) type.value = guessed;
    });
    const row = h("div", { class: "row" }, key, h("span", {}, "="), value, type);
    const grow = () => {
      if (rows.lastElementChild === row && (key.value || value.value)) addRow();
    };
    key.addEventListener("input", grow);
    value.addEventListener("input", grow);
    rows.appendChild(row);
  };
  addRow();
  const hints = suggestions.length
    ? h(
        "p",
        { class: "hint suggestions" },
        "Add: ",
        suggestions.map((s) =>
          h(
            "button",
            {
              type: "button",
              class: "link",
              title: s.hint,
              onclick: () => {
                const last = rows.lastElementChild;
                last.querySelector(".key").value = s.key;
                last.querySelector("select").value = s.type;
                last.querySelector(".value").focus();
                addRow();
              },
            },
            s.label || s.key,
          ),
        ),
      )
    : null;
  return {
    element: h("div", { class: "key-values" }, list, rows, hints),
    /** The rows as an object; throws on a value that does not fit its type. */
    value() {
      const result = {};
      for (const row of rows.querySelectorAll(".row")) {
        const key = row.querySelector(".key").value.trim();
        if (!key) continue;
        result[key] = typed(row.querySelector(".value").value, row.querySelector("select").value);
      }
      return result;
    },
  };
}

/** A button that runs `action` and reports its result or error as a notice. */
export function actionButton(label, action, attributes = {}) {
  const button = h("button", { type: "button", ...attributes }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const done = await action();
      if (done) toast(done);
    } catch (error) {
      toast(describe(error), "error");
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
