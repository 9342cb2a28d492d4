"""Zero-shot report files: report.json, pictures and one self-contained HTML page that shows them together.

Everything is written next to report.json (or into `report_dir`), named after
its stem, so several reports can share a directory: `report.json`,
`report.html`, `report_confusion.png`, `report_recall.png`, `report_embedding.png`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from evaluate.html_page import cards, embedded_figure, esc, page, pct, run_table, table
from evaluate.plots import confusion_matrix_png, embedding_map_png, per_class_recall_png
from evaluate.zeroshot import ZeroShotResult
from data_tools.atomic_write import write_json_atomic, write_text_atomic

HEADLINE = ("top1", "top5", "mean_per_class_recall", "macro_f1")


def heading(report: dict[str, Any]) -> str:
    """"Zero-shot", or the adapter that classified (e.g. "tip-adapter-f 16-shot")."""
    adapter = report.get("adapter")
    return f"{adapter['method']} {adapter['shots']}-shot" if adapter else "Zero-shot"


def write_zeroshot_report(result: ZeroShotResult, out: Path, *, report_dir: Path | None = None,
                          context: dict[str, Any] | None = None,
                          projection: Literal["pca", "tsne"] = "pca") -> dict[str, Path]:
    """Write report.json at `out` and the pictures + HTML page; returns what was written."""
    out = Path(out)
    pictures_dir = Path(report_dir) if report_dir is not None else out.parent
    pictures_dir.mkdir(parents=True, exist_ok=True)
    stem = out.stem
    report = result.report
    classnames = report["classes"]
    kind = heading(report)
    written: dict[str, Path] = {}
    written["confusion"] = confusion_matrix_png(
        report["confusion"], classnames, pictures_dir / f"{stem}_confusion.png",
        title=f"{kind} confusion (top-1 {report['top1']:.1%}, n={report['n']})",
    )  # fmt: skip
    written["recall"] = per_class_recall_png(report, pictures_dir / f"{stem}_recall.png",
                                             title=f"{kind} recall per class")
    written["embedding"] = embedding_map_png(
        result.image_features, result.y_true.tolist(), result.classifier.weights, list(range(len(classnames))),
        classnames, pictures_dir / f"{stem}_embedding.png", method=projection,
        title=f"Image and class-prompt embeddings ({projection.upper()}); modality gap {report['modality_gap']:.2f}",
    )  # fmt: skip
    payload = {**(context or {}), **report}
    payload["pictures"] = {name: os.path.relpath(path, out.parent) for name, path in written.items()}
    written["html"] = write_text_atomic(pictures_dir / f"{stem}.html", render_html(payload, written))
    payload["pictures"]["html"] = os.path.relpath(written["html"], out.parent)
    written["json"] = write_json_atomic(out, payload)
    return written


def render_html(payload: dict[str, Any], pictures: dict[str, Path]) -> str:
    """A self-contained page (pictures embedded as base64) with the metrics and pictures."""
    chance = 1.0 / max(1, payload["num_classes"])
    per_class = table(
        ["class", "support", "recall", "precision", "F1"],
        [[name, m["support"], pct(m["recall"] if m["support"] else None), pct(m["precision"]), pct(m["f1"])]
         for name, m in sorted(payload["per_class"].items(), key=lambda item: item[1]["recall"])],
    )
    figures = "".join(embedded_figure(pictures[name], caption, name) for name, caption in (
        ("confusion", "Confusion matrix, rows normalised: where each true class's images went."),
        ("recall", "Recall per class, best at the top; dotted line = chance, dashed = mean."),
        ("embedding", "2-D projection of image embeddings (dots) and class text embeddings (stars), coloured by "
                      "class. Separate image and text clouds show the modality gap."),
    ))  # fmt: skip
    averaged = payload.get("averaged_over")
    body = (
        f"<h1>{esc(heading(payload))} classification</h1>\n"
        f"<p>{payload['n']} images, {payload['num_classes']} classes (chance {pct(chance)}).</p>\n"
        + cards({k: pct(payload.get(k)) for k in HEADLINE})
        + (f"<p>Mean per-class recall and macro F1 average over {esc(averaged)}.</p>" if averaged else "")
        + "<h2>Run</h2>" + run_table(payload, {*HEADLINE, "per_class", "confusion", "classes", "pictures"})
        + "<h2>Pictures</h2>" + figures + "<h2>Per class</h2>" + per_class
    )
    return page(f"{heading(payload)} report", body)
