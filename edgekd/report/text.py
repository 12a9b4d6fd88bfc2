"""Number formats and marks shared by the Markdown and HTML renderers (plain text, no emoji)."""

from __future__ import annotations

from dataclasses import dataclass

DASH = "—"
UNSTABLE = "†"
"""Appended to a latency figure whose rounds disagreed or whose machine was busy (Latency.stable false)."""


@dataclass(frozen=True)
class Mark:
    """A table cell with a meaning the HTML draws as an inline SVG beside the text (Markdown keeps the text)."""

    kind: str  # within | over | unstable
    text: str


Cell = str | Mark


def num(x: float | None, fmt: str = ".2f", suffix: str = "") -> str:
    return DASH if x is None else f"{x:{fmt}}{suffix}"


def signed(x: float | None) -> str:
    return DASH if x is None else f"{x:+.2f}" if round(x, 2) else "0.00"  # never "-0.00"


def count(x: int | None, unit: float, fmt: str) -> str:
    return DASH if x is None else f"{x / unit:{fmt}}"


def size(n: int | None) -> str:
    if n is None:
        return DASH
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def speedup(x: float | None) -> str:
    return num(x, ".2f", "×")


def threads(n: int | None) -> str:
    return DASH if n is None else str(n)
