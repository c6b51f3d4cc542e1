/* ngbench leaderboard: sortable tables (progressive enhancement).
 *
 * Every number is in the HTML; this only reorders rows when a header of a table with class
 * "sortable" is clicked (or activated with Enter/Space). A cell's data-sort attribute, when
 * present, is its sort key ("Infinity" for misses, "" for missing values, which stay last).
 */
(function () {
  "use strict";

  function keyOf(cell) {
    if (!cell) { return { empty: true }; }
    var raw = cell.getAttribute("data-sort");
    if (raw === null) { raw = cell.textContent.trim(); }
    if (raw === "") { return { empty: true }; }
    var num = Number(raw);
    if (!isNaN(num)) { return { num: num }; }
    return { text: raw.toLowerCase() };
  }

  function compare(a, b) {
    if (a.num !== undefined && b.num !== undefined) { return a.num < b.num ? -1 : (a.num > b.num ? 1 : 0); }
    if (a.num !== undefined) { return -1; }
    if (b.num !== undefined) { return 1; }
    return a.text < b.text ? -1 : (a.text > b.text ? 1 : 0);
  }

  function sortTable(table, index, header) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      return { row: row, key: keyOf(row.cells[index]), i: i };
    });
    rows.sort(function (x, y) {
      if (x.key.empty || y.key.empty) {
        if (x.key.empty && y.key.empty) { return x.i - y.i; }
        return x.key.empty ? 1 : -1;
      }
      var c = compare(x.key, y.key);
      return (ascending ? c : -c) || (x.i - y.i);
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  function enable(table) {
    if (!table.tHead || !table.tHead.rows.length) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.classList.add("sorter");
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function (event) {
        if (event.target.closest("a")) { return; }
        sortTable(table, index, th);
      });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortTable(table, index, th);
        }
      });
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), enable);
}());
