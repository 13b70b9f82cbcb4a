"""The report page's HTML pieces: escaped text, numbers, tables and inline images."""

from __future__ import annotations

import html
import math
from typing import Any


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undefined"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def img(uri: str | None, alt: str, cls: str = "") -> str:
    return f'<img class="{cls}" alt="{esc(alt)}" src="{uri}">' if uri else ""
