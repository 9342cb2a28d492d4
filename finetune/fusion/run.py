"""`train_fusion`: one fusion run from checkpoint and shards to weights, report and plots.

Writes into `out`: `fusion.safetensors` + `fusion.json` (the classifier),
`config.json` (resolved settings), `metrics.jsonl` (one row per epoch),
`report.json`, `curves.png`, `confusion_<task>.png`, `per_class_recall_<task>.png`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import torch

from data_tools.atomic_write import write_json_atomic
from data_tools.loader import LoaderConfig
from data_tools.output_paths import check_output_dir
from finetune.errors import FinetuneError
from finetune.fusion.cache import FeatureCache
from finetune.fusion.config import FusionConfig
from finetune.fusion.curves import curves_png
from finetune.fusion.data import LabelledBatches, in_val_split, parse_tasks, resolve_label_spaces
from finetune.fusion.model import FusionClassifier
from finetune.fusion.multitask import TaskLossWeighting
from finetune.fusion.report import build_report, evaluate_conditions, write_plots
from finetune.fusion.store import save_fusion
from finetune.fusion.towers import set_towers_trainable
from finetune.fusion.train import BatchSource, fit
from finetune.train_eval_paths import TrainEvalPathsConfig
from pretrain.encoder import Encoder
from pretrain.errors import PretrainError


def _sources(model: FusionClassifier, encoder: Encoder, train_data: str, eval_data: str,
             config: FusionConfig, log: Callable[[str], None], shared: dict | None = None,
             ) -> tuple[BatchSource, BatchSource | None, BatchSource, Callable[[], dict]]:
    """(train, val, eval) batch sources, and a function that reports sample counts and skips (valid once the
    sources have been read). Frozen towers run once over the training shards (train and val split by key
    afterwards) and once over the eval shards; epochs then read the cached outputs."""
    common = {"classes": model.classes, "image_transform": encoder.preprocess, "tokenize": encoder.tokenizer,
              "val_by": config.val_by}
    loader = LoaderConfig(batch_size=config.batch_size, num_workers=config.num_workers, seed=config.seed)
    test = LabelledBatches(eval_data, loader, max_samples=config.max_eval_samples, **common)
    if config.towers != "frozen":
        has_val = config.val_fraction > 0
        train = LabelledBatches(train_data, replace(loader, shuffle=True, caption="random"),
                                split="train" if has_val else "all", val_fraction=config.val_fraction,
                                max_samples=config.max_train_samples, **common)
        val = (LabelledBatches(train_data, loader, split="val", val_fraction=config.val_fraction, **common)
               if has_val else None)

        def summary() -> dict:
            return {"train_samples": train.kept, "val_samples": val.kept if val else 0, "eval_samples": test.kept,
                    "train_skipped": {**train.loader_skipped, **train.skipped},
                    "eval_skipped": {**test.loader_skipped, **test.skipped}}

        return (lambda: train), ((lambda: val) if val else None), (lambda: test), summary
    everything = LabelledBatches(train_data, loader, max_samples=config.max_train_samples, **common)
    cache, train_skipped = _encoded(model, everything, shared, log)
    is_val = torch.tensor([in_val_split(s, config.val_fraction) for s in cache.split_ids], dtype=torch.bool)
    train_cache, val_cache = cache.subset(~is_val), cache.subset(is_val)
    if len(train_cache) == 0:
        raise FinetuneError(f"no training sample left after holding out val_fraction={config.val_fraction}; lower it")
    eval_cache, eval_skipped = _encoded(model, test, shared, log)
    generator = torch.Generator().manual_seed(config.seed)
    counts = {"train_samples": len(train_cache), "val_samples": len(val_cache), "eval_samples": len(eval_cache),
              "train_skipped": train_skipped, "eval_skipped": eval_skipped}
    return (
        lambda: train_cache.batches(config.batch_size, shuffle=True, generator=generator),
        (lambda: val_cache.batches(config.batch_size)) if len(val_cache) else None,
        lambda: eval_cache.batches(config.batch_size),
        lambda: counts,
    )


def _encoded(model: FusionClassifier, batches: LabelledBatches, shared: dict | None,
             log: Callable[[str], None]) -> tuple[FeatureCache, dict[str, int]]:
    """Tower outputs of a whole split and its skip counts, from `shared` when another run made them."""
    key = (str(batches.path), batches.max_samples, batches.val_by,
           tuple((t, tuple(c)) for t, c in model.classes.items()))
    hit = (shared or {}).get(key)
    if hit is not None and (not model.needs_tokens or "image_tokens" in hit[0].encoded):
        return hit
    log(f"fusion: running the frozen towers once over {batches.path}")
    cache = FeatureCache.build(model, batches)
    result = (cache, {**batches.loader_skipped, **batches.skipped})
    if shared is not None:
        shared[key] = result
    return result


def _print_row(row: dict, epochs: int, log: Callable[[str], None]) -> None:
    figures = " ".join(f"{k} {v:.4f}" for k, v in row.items()
                       if k not in ("epoch", "best") and isinstance(v, float) and not k.startswith("task_weight"))
    log(f"epoch {row['epoch']}/{epochs} {figures}{' *' if row.get('best') else ''}")


def train_fusion(paths: TrainEvalPathsConfig, *, out: str, config: FusionConfig,
                 log: Callable[[str], None] = print, shared_cache: dict | None = None) -> dict[str, Any]:
    """Train a fusion classifier on the checkpoint and `paths.train_data`, evaluate it on `paths.eval_data`, write
    everything to `out`.

    `shared_cache`: a dict the caller keeps between runs on the same checkpoint with frozen
    towers, so several heads are compared on tower outputs computed once.
    """
    config.validate()
    check_output_dir(out, create=False)  # a file at --out fails before training
    checkpoint, train_data, eval_data = paths.checkpoint, paths.train_data, paths.eval_data
    tasks = parse_tasks(config.label_field or config.tasks)
    classes = resolve_label_spaces(train_data, tasks)
    resolve_label_spaces(eval_data, tasks)  # a task absent from the eval shards fails now, not after training
    torch.manual_seed(config.seed)
    try:
        encoder = Encoder.load(checkpoint)
    except PretrainError as exc:
        raise FinetuneError(str(exc)) from exc
    model = FusionClassifier(encoder.model, config.head_config(), classes)
    trainable_tower_params = set_towers_trainable(encoder.model, config.towers, config.unfrozen_blocks)
    weighting = TaskLossWeighting(tasks, config.task_weighting, config.task_weights)
    out_dir = check_output_dir(out)
    write_json_atomic(out_dir / "config.json", {"method": "fusion", **asdict(paths), **asdict(config)})
    started = time.perf_counter()
    log(f"fusion {config.fusion}: tasks {', '.join(f'{t} ({len(c)} classes)' for t, c in classes.items())}, "
        f"towers {config.towers} ({trainable_tower_params} trainable tower parameters)")
    train, val, test, summary = _sources(model, encoder, train_data, eval_data, config, log, shared_cache)
    history = fit(model, weighting, train, val, config, lambda row: _print_row(row, config.epochs, log))
    with (out_dir / "metrics.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in history)
    save_fusion(out_dir, model, weighting, checkpoint=checkpoint, towers_trained=config.towers != "frozen")
    results = evaluate_conditions(model, test)
    report = build_report(results, weighting, config=config, history=history, data=summary(),
                          checkpoint=checkpoint, checkpoint_id=encoder.checkpoint_id)
    report["train_seconds"] = time.perf_counter() - started
    write_json_atomic(out_dir / "report.json", report)
    write_plots(report, out_dir)
    curves_png(history, tasks, out_dir / "curves.png", title=f"fusion {config.fusion}: training curves")
    log(f"report {out_dir / 'report.json'}: " + ", ".join(
        f"{t} top1 {report['tasks'][t]['top1']:.3f} macro-F1 {report['tasks'][t]['macro_f1']:.3f}" for t in tasks))
    return report
