"""report.html: one self-contained page (figures inline as base64 PNG, budget marks as inline SVG, no scripts).

Laid out for a 1366-px-wide laptop screen: the page is at most 1280 px wide, the summary table
has six short columns, detail tables keep their cells on one line and the text around them wraps.
"""

from __future__ import annotations

import base64
import html

from edgekd.report.layout import Block, FigureFile
from edgekd.report.text import Cell, Mark

MAX_WIDTH_PX = 1280

_CSS = f"""body{{font-family:system-ui,sans-serif;font-size:14px;margin:1em auto;padding:0 16px;max-width:{MAX_WIDTH_PX}px;color:#222}}
h1{{font-size:22px;margin:.3em 0}}h2{{font-size:18px;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}}h3{{font-size:15px}}
table{{border-collapse:collapse;font-size:13px;margin:.6em 0}}th,td{{border:1px solid #ccc;padding:3px 7px;text-align:right}}
th{{background:#f3f3f3}}td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){{text-align:left}}
table.detail td,table.detail th,table.summary td,table.summary th{{white-space:nowrap}}
table.stages td,table.stages th{{white-space:nowrap}}table.stages td:last-child,table.stages th:last-child{{white-space:normal;text-align:left}}.wide{{overflow-x:auto}}
code{{background:#f3f3f3;padding:1px 3px}}img{{max-width:100%}}.caption{{font-size:12px;color:#555}}
.mark svg{{vertical-align:-2px;margin-right:3px}}"""

_SVG = {
    "within": "<svg width='12' height='12' viewBox='0 0 12 12' aria-hidden='true'><circle cx='6' cy='6' r='6' fill='#2e7d32'/>"
    "<path d='M3 6.2l2 2 4-4.4' stroke='#fff' stroke-width='1.6' fill='none'/></svg>",
    "over": "<svg width='12' height='12' viewBox='0 0 12 12' aria-hidden='true'><circle cx='6' cy='6' r='6' fill='#c62828'/>"
    "<path d='M3.8 3.8l4.4 4.4M8.2 3.8l-4.4 4.4' stroke='#fff' stroke-width='1.6'/></svg>",
}


def inline(text: str) -> str:
    """Escape for HTML and turn **bold** and `code` spans into tags."""
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _cell(cell: Cell) -> str:
    if isinstance(cell, Mark):
        if cell.kind == "unstable":
            return f"<span title='rounds disagreed or the machine was busy'>{html.escape(cell.text)}</span>"
        return f"<span class='mark {cell.kind}'>{_SVG.get(cell.kind, '')}{html.escape(cell.text)}</span>"
    return html.escape(cell)


def render_html(blocks: list[Block], figures: dict[str, FigureFile], title: str) -> str:
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
    ]
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(args[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{inline(args[0])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in args[0]) + "</ul>")
        elif kind == "table":
            headers, rows, css = args
            head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
            table = f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            out.append(table if css == "summary" else f"<div class='wide'>{table}</div>")
        elif kind == "img":
            name, alt, caption = args
            data = base64.b64encode(figures[name].png).decode("ascii")
            out.append(f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'></p>")
            if caption:
                out.append(f"<p class='caption'>{inline(caption)}</p>")
    out.append("</body></html>")
    return "\n".join(out)
