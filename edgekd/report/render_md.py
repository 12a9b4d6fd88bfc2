"""report.md: the report's blocks as GitHub-flavoured Markdown (figures linked as the PNG files beside it)."""

from __future__ import annotations

from edgekd.report.layout import Block, FigureFile
from edgekd.report.text import Cell, Mark


def _cell(cell: Cell) -> str:
    text = cell.text if isinstance(cell, Mark) else cell
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], figures: dict[str, FigureFile]) -> str:
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + args[0])
        elif kind == "p":
            out.append(args[0])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in args[0]))
        elif kind == "table":
            headers, rows = args[0], args[1]
            lines = ["| " + " | ".join(map(_cell, headers)) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            name, alt, caption = args
            out.append(f"![{alt}]({figures[name].path.name})" + (f"\n\n{caption}" if caption else ""))
    return "\n\n".join(out) + "\n"
