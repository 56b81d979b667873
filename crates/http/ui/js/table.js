// A list of objects paged, sorted and filtered by the API itself (`page`, `page_size`,
// `sort`, `sort_reverse`, `name`, `use_regex`), so a list of 10,000 queues costs the
// browser one page. The list's settings live in the address (#/queues?page=2&sort=...),
// so a reload or a shared link shows the same page.

import { h, fill, count } from "./dom.js";
import * as api from "./api.js";

const PAGE_SIZES = [20, 50, 100, 500];

/** columns: [{key, label, sort (the API's field, or null: not sortable), cell(row) ->
 *  node or text, numeric}]. `source(vhost)` is the list's API path. */
export function pagedTable({ columns, source, search, defaultSort = "name", columnsParam, empty = "Nothing here yet.", rowId }) {
  const state = {
    page: Math.max(1, Number(search.get("page")) || 1),
    page_size: PAGE_SIZES.includes(Number(search.get("page_size"))) ? Number(search.get("page_size")) : 100,
    sort: search.get("sort") || defaultSort,
    sort_reverse: search.get("sort_reverse") === "true",
    name: search.get("name") || "",
    use_regex: search.get("use_regex") === "true",
  };

  const filter = h("input", { type: "search", name: "filter", value: state.name, placeholder: "Filter by name", "aria-label": "Filter by name" });
  const regex = h("input", { type: "checkbox", name: "use_regex", checked: state.use_regex });
  const size = h(
    "select",
    { name: "page_size", "aria-label": "Items per page" },
    PAGE_SIZES.map((n) => h("option", { value: n, selected: n === state.page_size }, `${n} per page`)),
  );
  const summary = h("span", { class: "summary", "aria-live": "polite" });
  const problem = h("p", { class: "form-error", role: "alert", hidden: true });
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const headCells = columns.map((column) => {
    const cell = h("th", { class: column.numeric ? "numeric" : null, scope: "col" });
    if (column.sort) {
      const button = h("button", { type: "button", class: "sort" }, column.label);
      button.addEventListener("click", () => {
        if (state.sort === column.sort) state.sort_reverse = !state.sort_reverse;
        else {
          state.sort = column.sort;
          state.sort_reverse = Boolean(column.numeric);
        }
        state.page = 1;
        changed();
      });
      cell.appendChild(button);
    } else {
      cell.textContent = column.label;
    }
    return cell;
  });
  const table = h("table", { class: "list" }, h("thead", {}, h("tr", {}, headCells)), body);

  let typing = null;
  filter.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.name = filter.value;
      state.page = 1;
      changed();
    }, 250);
  });
  regex.addEventListener("change", () => {
    state.use_regex = regex.checked;
    state.page = 1;
    changed();
  });
  size.addEventListener("change", () => {
    state.page_size = Number(size.value);
    state.page = 1;
    changed();
  });

  let asked = 0;
  let lastAnswer = null;

  /** Keeps the list's settings in the address without a new history entry. */
  function remember() {
    const base = location.hash.split("?")[0];
    const params = api.query({
      page: state.page > 1 ? state.page : "",
      page_size: state.page_size !== 100 ? state.page_size : "",
      sort: state.sort !== defaultSort ? state.sort : "",
      sort_reverse: state.sort_reverse,
      name: state.name,
      use_regex: state.use_regex,
    });
    history.replaceState(null, "", base + params);
  }

  function changed() {
    // A filter still being typed when its page was left changes nothing.
    if (!element.isConnected) return;
    remember();
    load().catch(() => {});
  }

  function renderHead() {
    columns.forEach((column, i) => {
      const sorted = column.sort && column.sort === state.sort;
      headCells[i].setAttribute("aria-sort", sorted ? (state.sort_reverse ? "descending" : "ascending") : "none");
    });
  }

  function renderPager(answer) {
    const pages = Math.max(1, answer.page_count || 1);
    const go = (page) => {
      state.page = page;
      changed();
    };
    fill(
      pager,
      h("button", { type: "button", class: "secondary", disabled: state.page <= 1, onclick: () => go(state.page - 1), "aria-label": "Previous page" }, "‹ Previous"),
      h("span", { class: "page-of" }, `Page ${count(state.page)} of ${count(pages)}`),
      h("button", { type: "button", class: "secondary", disabled: state.page >= pages, onclick: () => go(state.page + 1), "aria-label": "Next page" }, "Next ›"),
    );
    const filtered = answer.filtered_count !== answer.total_count ? `${count(answer.filtered_count)} of ` : "";
    fill(summary, `${filtered}${count(answer.total_count)} in all`);
  }

  function renderRows(items) {
    if (!items.length) {
      fill(body, h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, state.name ? "No names match the filter." : empty)));
      return;
    }
    fill(
      body,
      items.map((row) =>
        h(
          "tr",
          { "data-id": rowId ? rowId(row) : row.name },
          columns.map((column) => h("td", { class: column.numeric ? "numeric" : null }, column.cell(row))),
        ),
      ),
    );
  }

  /** Asks for the page on show; a filter the API refuses (a bad regex) is said so. */
  async function load() {
    const params = {
      page: state.page,
      page_size: state.page_size,
      sort: state.sort,
      sort_reverse: state.sort_reverse,
      name: state.name,
      use_regex: state.use_regex,
      columns: columnsParam,
    };
    // Only the latest request's answer is shown: an older one arriving late is dropped.
    const ticket = ++asked;
    let answer;
    try {
      answer = await api.get(source() + api.query(params));
    } catch (error) {
      if (ticket !== asked) return;
      if (error.error === "page_out_of_range" && state.page > 1) {
        // Fewer items than when this page was asked for (or a link to a page gone).
        state.page = 1;
        remember();
        return load();
      }
      if (error.status === 400) {
        const regex = state.use_regex && state.name;
        fill(problem, regex ? `The filter is not a regular expression the broker accepts (${error.message}).` : error.message);
        problem.hidden = false;
        return;
      }
      throw error;
    }
    if (ticket !== asked) return;
    problem.hidden = true;
    if (answer.page_count && state.page > answer.page_count) {
      state.page = answer.page_count;
      remember();
      return load();
    }
    lastAnswer = answer;
    renderHead();
    renderRows(answer.items);
    renderPager(answer);
  }

  const element = h(
    "section",
    { class: "paged" },
    h("div", { class: "toolbar" }, filter, h("label", { class: "inline" }, regex, "Regex"), size, summary),
    problem,
    h("div", { class: "scroll" }, table),
    pager,
  );
  renderHead();
  return { element, load, answer: () => lastAnswer };
}
