"""Zero-shot report files: report.json, pictures and one HTML page that shows them together.

Everything is written next to report.json (or into `report_dir`), named after
its stem, so several reports can share a directory: `report.json`,
`report.html`, `report_confusion.png`, `report_recall.png`, `report_embedding.png`.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Literal

from evaluate.plots import confusion_matrix_png, embedding_map_png, per_class_recall_png
from evaluate.zeroshot import ZeroShotResult
from data_tools.atomic_write import write_json_atomic, write_text_atomic

HEADLINE = ("top1", "top5", "mean_per_class_recall", "macro_f1")


def heading(report: dict[str, Any]) -> str:
    """"Zero-shot", or the adapter that classified (e.g. "tip-adapter-f 16-shot")."""
    adapter = report.get("adapter")
    return f"{adapter['method']} {adapter['shots']}-shot" if adapter else "Zero-shot"


def write_zeroshot_report(
    result: ZeroShotResult,
    out: Path,
    *,
    report_dir: Path | None = None,
    context: dict[str, Any] | None = None,
    projection: Literal["pca", "tsne"] = "pca",
) -> dict[str, Path]:
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
    written["recall"] = per_class_recall_png(
        report, pictures_dir / f"{stem}_recall.png", title=f"{kind} recall per class"
    )
    num_classes = len(classnames)
    written["embedding"] = embedding_map_png(
        result.image_features, result.y_true.tolist(), result.classifier.weights, list(range(num_classes)),
        classnames, pictures_dir / f"{stem}_embedding.png", method=projection,
        title=f"Image and class-prompt embeddings ({projection.upper()}); modality gap {report['modality_gap']:.2f}",
    )  # fmt: skip
    payload = {**(context or {}), **report}
    payload["pictures"] = {name: os.path.relpath(path, out.parent) for name, path in written.items()}
    written["html"] = write_text_atomic(pictures_dir / f"{stem}.html", render_html(payload, written, pictures_dir))
    payload["pictures"]["html"] = os.path.relpath(written["html"], out.parent)
    written["json"] = write_json_atomic(out, payload)
    return written


def render_html(payload: dict[str, Any], pictures: dict[str, Path], html_dir: Path) -> str:
    """A self-contained page (pictures referenced by relative path) with the metrics and pictures."""
    esc = html.escape
    headline = "".join(
        f"<div class='card'><div class='v'>{_pct(payload.get(k))}</div><div class='k'>{esc(k)}</div></div>"
        for k in HEADLINE
    )
    chance = 1.0 / max(1, payload["num_classes"])
    context_rows = "".join(
        f"<tr><th>{esc(str(k))}</th><td>{esc(_plain(v))}</td></tr>"
        for k, v in payload.items()
        if v is not None and k not in {*HEADLINE, "per_class", "confusion", "classes", "pictures"}
    )
    per_class_rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{m['support']}</td><td>{_pct(m['recall'] if m['support'] else None)}</td>"
        f"<td>{_pct(m['precision'])}</td><td>{_pct(m['f1'])}</td></tr>"
        for name, m in sorted(payload["per_class"].items(), key=lambda item: item[1]["recall"])
    )
    images = "".join(
        f"<figure><img src='{esc(os.path.relpath(pictures[name], html_dir))}' alt='{name}'>"
        f"<figcaption>{caption}</figcaption></figure>"
        for name, caption in (
            ("confusion", "Confusion matrix, rows normalised: where each true class's images went."),
            ("recall", "Recall per class, best at the top; dotted line = chance, dashed = mean."),
            ("embedding", "2-D projection of image embeddings (dots) and class text embeddings (stars), coloured by "
                          "class. Separate image and text clouds show the modality gap."),
        )
    )  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(heading(payload))} report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
.cards {{ display: flex; gap: 1em; flex-wrap: wrap; }}
.card {{ border: 1px solid #ddd; border-radius: 8px; padding: .8em 1.2em; min-width: 9em; }}
.card .v {{ font-size: 1.8em; font-weight: 600; }} .card .k {{ color: #666; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border-bottom: 1px solid #eee; padding: .25em .8em; text-align: left; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }} figcaption {{ color: #555; }}
</style></head><body>
<h1>{esc(heading(payload))} classification</h1>
<p>{payload['n']} images, {payload['num_classes']} classes (chance {_pct(chance)}).</p>
<div class="cards">{headline}</div>
<h2>Run</h2><table>{context_rows}</table>
<h2>Pictures</h2>{images}
<h2>Per class</h2>
<table><tr><th>class</th><th>support</th><th>recall</th><th>precision</th><th>F1</th></tr>{per_class_rows}</table>
</body></html>
"""


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)
