"""Retrieval report files: report.json, a recall@k chart beside it, and one self-contained HTML page.

    report.json          the figures (`image_to_text_R@{1,5,10}`, ..., `n`) and the run's context
    report_recall.png    recall@k both ways
    report.html          the same, pictures embedded (moves on its own)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from data_tools.atomic_write import write_json_atomic, write_text_atomic
from evaluate.html_page import cards, embedded_figure, esc, page, pct, run_table, table
from evaluate.plots import recall_at_k_png
from evaluate.retrieval_recall import KS

DIRECTIONS = ("image_to_text", "text_to_image")


def write_retrieval_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.json at `out`, its chart and HTML page beside it; returns what was written."""
    out = Path(out)
    written = {"recall": recall_at_k_png(report, KS, out.with_name(f"{out.stem}_recall.png"),
                                         title=f"Retrieval recall@k ({report['n']} images, {report['n_texts']} texts)")}
    written["html"] = write_text_atomic(out.with_name(f"{out.stem}.html"), render_html(report, written["recall"]))
    payload = {**report, "pictures": {name: os.path.relpath(path, out.parent) for name, path in written.items()}}
    written["json"] = write_json_atomic(out, payload)
    return written


def render_html(report: dict[str, Any], chart: Path) -> str:
    figures = {f"{d.replace('_to_', '->')} R@1": pct(report[f"{d}_R@1"]) for d in DIRECTIONS}
    rows = [[d.replace("_to_", " -> "), *(pct(report[f"{d}_R@{k}"]) for k in KS),
             f"{report[f'{d}_mean_rank']:.1f}", f"{report[f'{d}_median_rank']:.0f}"] for d in DIRECTIONS]
    metric_keys = {f"{d}_{m}" for d in DIRECTIONS for m in (*(f"R@{k}" for k in KS), "mean_rank", "median_rank")}
    body = (
        "<h1>Image-text retrieval</h1>\n"
        f"<p>{report['n']} images, {report['n_texts']} distinct captions; exact search over every pair. "
        "A query counts as found at k when any of its matching captions (or images) ranks in the top k.</p>\n"
        + cards(figures)
        + "<h2>Recall</h2>" + table(["direction", *(f"R@{k}" for k in KS), "mean rank", "median rank"], rows)
        + embedded_figure(chart, "Recall@k both ways: the share of queries whose match is among the k nearest.",
                          "recall@k")
        + "<h2>Run</h2>" + run_table(report, metric_keys | {"pictures"})
    )
    return page(f"Retrieval report ({esc(str(report.get('data', '')))})", body)
