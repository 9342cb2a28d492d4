"""One screen of the figures a pipeline run measured: `python -m evaluate.run_summary RUN_ROOT`.

Reads what the stages wrote under RUN_ROOT (the layout `make demo` uses):
`pretrain/summary.json`, `eval/*/report.json` (zero-shot and retrieval) and
`index/*.json`; a missing file is left out, never an error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


WIDTH = 26  # the longest label make demo writes: retrieval-emoji-val-black


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _pct(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "-"


def summary_lines(root: Path) -> list[str]:
    """The summary as lines of text (at most a screen)."""
    lines = [f"figures measured under {root}:"]
    train = _read(root / "pretrain" / "summary.json")
    if train:
        lines.append(f"  {'pretraining':{WIDTH}s} {train.get('step')} steps in {train.get('seconds', 0) / 60:.1f} min "
                     f"({train.get('precision')}), contrastive batch {train.get('contrastive_batch')}, "
                     f"final loss {train.get('loss', float('nan')):.3f}")
    for report_dir in sorted((root / "eval").glob("*/report.json")):
        report, name = _read(report_dir), report_dir.parent.name
        if "top1" in report:
            lines.append(f"  {name:{WIDTH}s} zero-shot top-1 {_pct(report['top1'])}, top-5 {_pct(report.get('top5'))}, "
                         f"mean per-class recall {_pct(report.get('mean_per_class_recall'))} "
                         f"({report.get('n')} images)")
        elif "image_to_text_R@1" in report:
            lines.append(f"  {name:{WIDTH}s} R@1 image->text {_pct(report['image_to_text_R@1'])}, text->image "
                         f"{_pct(report.get('text_to_image_R@1'))}; R@5 {_pct(report.get('image_to_text_R@5'))} / "
                         f"{_pct(report.get('text_to_image_R@5'))} ({report.get('n')} images)")
    index = _read(root / "index" / "info.json")
    if index:
        lines.append(f"  {'search index':{WIDTH}s} {index.get('count')} vectors of {index.get('dim')} dims ({root / 'index'})")
    curves = root / "pretrain" / "curves.png"
    if curves.exists():
        lines.append(f"  {'training curves':{WIDTH}s} {curves}")
    return lines


if __name__ == "__main__":
    print("\n".join(summary_lines(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))))
