"""Self-contained HTML pages: one file that opens offline in any browser, figures inlined as PNG, tables that sort
when their header is clicked. The building blocks (:func:`page`, :func:`table`, :func:`figure_block`) are shared by
the page of one run (:mod:`hacknip.report.run_page`) and the page comparing runs (:mod:`hacknip.report.compare`)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

STYLE = """
:root { color-scheme: light; --muted: #5a6270; --line: #d8dce3; --accent: #1f5fa8; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1c2430; margin: 0;
       background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.45rem; margin: 0.4em 0 0.2em; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 1.6em 0 0.5em; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
p.lead { color: var(--muted); margin-top: 0; overflow-wrap: anywhere; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.card .label { color: var(--muted); font-size: 0.85rem; }
.card .value { font-size: 1.2rem; font-weight: 600; overflow-wrap: anywhere; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 460px), 1fr)); gap: 16px; }
figure { margin: 0; max-width: 860px; }
figure img { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.85rem; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85rem; }
th { white-space: nowrap; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.highlight td { background: #eaf2fb; font-weight: 600; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
th button::after { content: " \\2195" / ""; color: var(--muted); }
th[aria-sort="ascending"] button::after { content: " \\2191" / ""; }
th[aria-sort="descending"] button::after { content: " \\2193" / ""; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 0.85rem; overflow-wrap: anywhere; }
.note { border-left: 3px solid #c98a00; background: #fff8e6; padding: 6px 10px; }
footer { color: var(--muted); font-size: 0.8rem; margin: 2em 0 1em; }
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (header, column) {
    var button = header.querySelector("button");
    if (!button) { return; }
    button.addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.sort, y = b.cells[column].dataset.sort;
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


@dataclass
class PageFigure:
    """A figure as the page shows it: PNG bytes, the alt text a screen reader reads, and a caption."""

    png: bytes
    alt: str
    caption: str = ""


def png_bytes(figure) -> bytes:
    """A matplotlib Figure as PNG bytes (drawn once: the same bytes go to the PNG file and into the page)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def page(title: str, lead: str, sections: Sequence[str], footer: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{escape(title)}</h1>\n<p class=\"lead\">{escape(lead)}</p>\n"
        + "\n".join(sections)
        + f"\n<footer>{escape(footer)}</footer>\n</main>\n<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )


def section(heading: str, *content: str) -> str:
    anchor = "".join(c if c.isalnum() else "-" for c in heading.lower()).strip("-")
    return f"<section id=\"{anchor}\">\n<h2>{escape(heading)}</h2>\n" + "\n".join(content) + "\n</section>"


def cards(items: Sequence[tuple[str, str]]) -> str:
    return "<div class=\"cards\">" + "".join(
        f"<div class=\"card\"><div class=\"label\">{escape(label)}</div><div class=\"value\">{escape(value)}</div></div>"
        for label, value in items) + "</div>"


@dataclass
class Cell:
    """A table cell: the text shown, the value it sorts by, whether it is a number (right-aligned), and a link."""

    text: str
    sort: Any = None
    number: bool = False
    href: str | None = None


def cell(value: Any, digits: str = ".4g") -> Cell:
    """A cell for a plain value: numbers formatted with ``digits`` and sorted by value, the rest as text."""
    if isinstance(value, Cell):
        return value
    if isinstance(value, bool) or value is None:
        return Cell("" if value is None else str(value))
    if isinstance(value, int):
        return Cell(str(value), value, True)
    if isinstance(value, float):
        return Cell(format(value, digits), value, True)
    return Cell(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], sortable: bool = False,
          highlight: Sequence[bool] | None = None, caption: str = "") -> str:
    if not rows:
        return "<p>none</p>"
    cells = [[cell(value) for value in row] for row in rows]
    numeric = [all(row[i].number or not row[i].text for row in cells) for i in range(len(headers))]
    head = "".join(_header(h, numeric[i], sortable) for i, h in enumerate(headers))
    body = []
    for index, row in enumerate(cells):
        marked = ' class="highlight"' if highlight and highlight[index] else ""
        body.append(f"<tr{marked}>" + "".join(_data_cell(c) for c in row) + "</tr>")
    caption_html = f"<caption>{escape(caption)}</caption>" if caption else ""
    kind = ' class="sortable"' if sortable else ""
    return (f'<div class="scroll"><table{kind}>{caption_html}'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _header(text: str, numeric: bool, sortable: bool) -> str:
    label = f'<button type="button">{escape(text)}</button>' if sortable else escape(text)
    return f'<th scope="col"{NUMBER if numeric else ""}>{label}</th>'


def _data_cell(c: Cell) -> str:
    sort_value = escape(str(c.text if c.sort is None else c.sort))
    text = f'<a href="{escape(c.href)}">{escape(c.text)}</a>' if c.href else escape(c.text)
    return f'<td{NUMBER if c.number else ""} data-sort="{sort_value}">{text}</td>'


NUMBER = ' class="number"'


def figure_block(figures: Sequence[PageFigure]) -> str:
    return "<div class=\"figures\">" + "".join(
        f"<figure><img src=\"data:image/png;base64,{base64.b64encode(f.png).decode('ascii')}\" alt=\"{escape(f.alt)}\">"
        + (f"<figcaption>{escape(f.caption)}</figcaption>" if f.caption else "") + "</figure>"
        for f in figures) + "</div>"


def definitions(items: Sequence[tuple[str, Any]]) -> str:
    """A definition list of what is present (empty values are left out)."""
    shown = [(key, value) for key, value in items if value not in (None, "", [], {})]
    return "<dl>" + "".join(f"<dt>{escape(key)}</dt><dd>{_value_html(value)}</dd>" for key, value in shown) + "</dl>"


def _value_html(value: Any) -> str:
    if isinstance(value, dict):
        return "<br>".join(f"{escape(str(k))}: <code>{escape(str(v))}</code>" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(escape(str(v)) for v in value)
    return f"<code>{escape(str(value))}</code>"


def note(text: str) -> str:
    return f"<p class=\"note\">{escape(text)}</p>"
