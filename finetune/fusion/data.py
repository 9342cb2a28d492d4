"""Multi-label shards for fusion training: task label spaces and labelled batches.

A task is a label field: `<task>` at the top level of each sample's `.json`, else
`labels[<task>]` (as `--label-field` reads it everywhere), with class
names from dataset.json's `label_fields[<task>]` (index = label id). The task
`label` means the single-label convention: `label` in the `.json` and
dataset.json's `classes`. Shards without dataset.json label lists get the
sorted distinct values found in the training shards.

A sample missing a task's label (or holding a value outside the task's class
list) is skipped and counted by reason; if no sample is left that is an error.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch import Tensor

from data_tools.errors import DataError
from data_tools.loader import LoaderConfig, list_shards, make_loader, read_dataset_info
from data_tools.tar_samples import iter_tar_samples
from evaluate.class_names import field_label
from finetune.errors import FinetuneError

SINGLE_LABEL_TASK = "label"
Split = Literal["all", "train", "val"]
ValBy = Literal["key", "caption"]


def parse_tasks(tasks: str | Sequence[str]) -> list[str]:
    """`"category,subcategory"` or a list -> ["category", "subcategory"] (order kept, no repeats)."""
    items = tasks.split(",") if isinstance(tasks, str) else [t for item in tasks for t in item.split(",")]
    names = list(dict.fromkeys(t.strip() for t in items if t.strip()))
    if not names:
        raise FinetuneError("no task given: pass `tasks` with one or more label fields, e.g. `tasks` category")
    return names


def _labels_in_shards(path: str | Path, tasks: Sequence[str]) -> dict[str, set[str]]:
    """Distinct label values per task, read from the .json members only (no image decoding)."""
    seen: dict[str, set[str]] = {t: set() for t in tasks}
    for shard in list_shards(path):
        for raw in iter_tar_samples(shard, lambda *_: None):
            try:
                meta = json.loads(raw.get("json", b"{}"))
            except ValueError:
                continue  # the loader counts it as bad_metadata when training reads it
            for task in tasks:
                value = field_label(meta, task) if isinstance(meta, dict) else None
                if value is not None:
                    seen[task].add(value)
    return seen


def resolve_label_spaces(path: str | Path, tasks: Sequence[str]) -> dict[str, list[str]]:
    """Class names per task for the shards at `path`; FinetuneError for a task not in the data."""
    try:
        info = read_dataset_info(path)
        fields = dict(info.get("label_fields") or {})
        if info.get("classes"):
            fields.setdefault(SINGLE_LABEL_TASK, info["classes"])
        unknown = [t for t in tasks if t not in fields]
        seen = _labels_in_shards(path, unknown) if unknown else {}
    except DataError as exc:
        raise FinetuneError(str(exc)) from exc
    for task in unknown:
        if not seen[task]:
            available = sorted(fields) or ["none"]
            raise FinetuneError(
                f"task {task!r} is not a label field of {path} (available: {', '.join(available)}); "
                "pass `tasks` with fields the shards' .json holds (top level or `labels`)"
            )
        fields[task] = sorted(seen[task])
    return {t: [str(name) for name in fields[t]] for t in tasks}


def in_val_split(split_id: str, val_fraction: float) -> bool:
    """Deterministic train/val split by a sample's split id, stable across runs, shard orders and workers."""
    return (zlib.crc32(split_id.encode("utf-8")) % 10_000) < val_fraction * 10_000


def split_id(key: str, meta: dict, caption: str, val_by: ValBy) -> str:
    """What decides a sample's side of the train/val split: its key, or its stored caption, which
    keeps every drawing of one concept (emoji: two vendors, one caption) on the same side."""
    return key if val_by == "key" else str(meta.get("caption") or caption)


class LabelledBatches:
    """Batches with `targets` (B, T) class ids in task order; unlabelled samples skipped and counted.

    Each iteration is one pass over the shards. `skipped` holds counts by reason
    ("missing label 'category'", "unknown subcategory 'x'") for the last full pass;
    `kept` the number of samples yielded in it.
    """

    def __init__(self, path: str | Path, loader: LoaderConfig, *, classes: dict[str, list[str]],
                 image_transform: Callable[[Image.Image], Tensor], tokenize: Callable[[list[str]], Tensor],
                 split: Split = "all", val_fraction: float = 0.0, val_by: ValBy = "key",
                 max_samples: int | None = None) -> None:
        self.path, self.classes, self.tasks = path, classes, list(classes)
        self._index = {t: {name: i for i, name in enumerate(names)} for t, names in classes.items()}
        self.split, self.val_fraction, self.val_by, self.max_samples = split, val_fraction, val_by, max_samples
        self.skipped: Counter[str] = Counter()
        self.kept = 0
        self._epoch = 0
        try:
            self._loader = make_loader(path, loader, image_transform=image_transform, tokenize=tokenize)
        except DataError as exc:
            raise FinetuneError(str(exc)) from exc

    def _targets(self, meta: dict) -> list[int] | str:
        """Class ids in task order, or the reason the sample is skipped."""
        ids = []
        for task in self.tasks:
            value = field_label(meta, task)
            if value is None:
                return f"missing label {task!r}"
            if value not in self._index[task]:
                return f"unknown {task} {value!r}"
            ids.append(self._index[task][value])
        return ids

    def _select(self, batch: dict, skipped: Counter[str]) -> tuple[list[int], list[list[int]], list[str]]:
        """Rows of a loader batch in this split that have every task's label, their targets and split ids."""
        rows, targets, sides = [], [], []
        for i, (key, meta) in enumerate(zip(batch["key"], batch["meta"])):
            side = split_id(key, meta, batch["caption"][i], self.val_by)
            if self.split != "all" and in_val_split(side, self.val_fraction) != (self.split == "val"):
                continue
            result = self._targets(meta)
            if isinstance(result, str):
                skipped[result] += 1
                continue
            rows.append(i)
            targets.append(result)
            sides.append(side)
        return rows, targets, sides

    def __iter__(self) -> Iterator[dict]:
        self._loader.set_epoch(self._epoch)
        self._epoch += 1
        skipped: Counter[str] = Counter()
        kept = 0
        for batch in self._loader:
            rows, targets, sides = self._select(batch, skipped)
            if self.max_samples is not None:
                rows, targets, sides = (part[: self.max_samples - kept] for part in (rows, targets, sides))
            if rows:
                kept += len(rows)
                index = torch.tensor(rows)
                yield {"image": batch["image"][index], "text": batch["text"][index],
                       "caption": [batch["caption"][i] for i in rows], "key": [batch["key"][i] for i in rows],
                       "split_id": sides,
                       "targets": torch.tensor(targets, dtype=torch.long)}  # (B, T)
            if self.max_samples is not None and kept >= self.max_samples:
                break
        self.skipped, self.kept = skipped, kept
        if kept == 0:
            reasons = ", ".join(f"{n} {r}" for r, n in skipped.most_common(3)) or "no samples read"
            raise FinetuneError(
                f"no usable sample for tasks {', '.join(self.tasks)} in {self.path} ({self.split} split: {reasons}); "
                "check `tasks` against the shards' .json `labels`"
            )

    @property
    def loader_skipped(self) -> dict[str, int]:
        """Samples the shard loader itself dropped (corrupt, no caption, ...)."""
        return self._loader.skipped
