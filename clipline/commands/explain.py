"""`clipline explain`: heat maps of which image regions match a text, and a fusion head's gates / attention.

    clipline explain --checkpoint RUN --data DIR --out DIR [--text "a red apple"] [--method all] [--fusion-run RUN2]

The heat maps come from `evaluate.heatmap`; with --fusion-run, a trained fusion
head's gate values / attention weights per sample from `finetune.fusion.explain`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from clipline.commands.errors import reported_errors
from clipline.commands.model_choice import CheckpointPathsConfig
from clipline.flags import parse_config
from data_tools.output_paths import check_output_dir
from evaluate.errors import EvaluateError


@dataclass(kw_only=True)
class ExplainConfig:
    """Heat maps of which image regions match a text, and a fusion head's gates / attention."""

    paths: CheckpointPathsConfig
    """The model whose patches are scored, the shards whose first --count samples are shown, the directory for
    heatmaps.png / heatmaps.json (and fusion_<i>.png with --fusion-run) (flags without prefix)."""
    text: str | None = None
    """Text to locate in every image; default: each sample's own caption."""
    count: int = 8
    """Samples to show."""
    method: str = "all"
    """value, tokens, gradcam, occlusion, rise, or all (one column each)."""
    fusion_run: str | None = None
    """A `clipline finetune fusion` run: also draw its gate values / attention weights per sample."""


def run_explain(cmd: ExplainConfig) -> None:
    from evaluate.heatmap import METHODS, render_heatmaps
    from finetune.fusion.explain import explain_samples
    from pretrain.encoder import Encoder

    if cmd.method != "all" and cmd.method not in METHODS:
        raise EvaluateError(f"unknown --method {cmd.method!r}; choose all or one of {', '.join(METHODS)}")
    methods = METHODS if cmd.method == "all" else (cmd.method,)
    paths = cmd.paths
    out = check_output_dir(paths.out, create=False)  # a file at --out fails before the model loads
    summary = render_heatmaps(Encoder.load(paths.checkpoint), paths.data, out, text=cmd.text, count=cmd.count,
                              methods=methods)
    print(f"heatmap: wrote {out / 'heatmaps.png'}; mean object focus {json.dumps(summary['mean_object_focus'])}")
    if cmd.fusion_run:
        explain_samples(cmd.fusion_run, paths.data, out, count=cmd.count)
        print(f"heatmap: wrote {out}/fusion_*.png and fusion_explanations.json")


def main(argv: list[str] | None = None) -> None:
    with reported_errors("explain"):
        run_explain(parse_config(ExplainConfig, argv, prog="clipline explain", flat=("paths",)))
