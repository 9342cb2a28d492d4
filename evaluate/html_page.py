"""Self-contained HTML report pages: headline cards, a run table, pictures embedded as base64.

A page references no other file, so it can be moved, mailed or attached on its
own; the PNGs beside report.json stay for people who want them separately.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: .8em 1.2em; min-width: 9em; }
.card .v { font-size: 1.8em; font-weight: 600; } .card .k { color: #666; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border-bottom: 1px solid #eee; padding: .25em .8em; text-align: left; }
figure { margin: 1.5em 0; } img { max-width: 100%; border: 1px solid #eee; } figcaption { color: #555; }
"""
esc = html.escape


def embedded_figure(path: Path, caption: str, alt: str) -> str:
    """A <figure> holding the PNG at `path` as a data: URL."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{esc(alt)}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def cards(values: dict[str, str]) -> str:
    return "<div class='cards'>" + "".join(
        f"<div class='card'><div class='v'>{esc(v)}</div><div class='k'>{esc(k)}</div></div>"
        for k, v in values.items()
    ) + "</div>"


def run_table(payload: dict[str, Any], skip: Collection[str]) -> str:
    """Every other field of the report, one row each."""
    return "<table>" + "".join(
        f"<tr><th>{esc(str(k))}</th><td>{esc(plain(v))}</td></tr>"
        for k, v in payload.items() if v is not None and k not in skip
    ) + "</table>"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: str) -> str:
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>\n"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)
