"""`clipline data inspect DIR`: what is in a shard directory, and a contact sheet of it."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from pathlib import Path

from PIL import Image

from data_tools.build_marker import incomplete_build
from data_tools.contact_sheet import write_contact_sheet
from data_tools.loader import list_shards, read_dataset_info
from data_tools.sample_fields import ParsedSample, SampleProblem, parse_sample
from data_tools.tar_samples import iter_tar_samples


def _length_stats(values: list[int]) -> dict:
    if not values:
        return {}
    return {"min": min(values), "mean": round(statistics.fmean(values), 2), "median": statistics.median(values),
            "max": max(values)}


def _reservoir_add(kept: list, item: tuple, seen: int, size: int, rng: random.Random) -> None:
    """Algorithm R: after n items, each has been kept with probability size/n."""
    if len(kept) < size:
        kept.append(item)
        return
    slot = rng.randrange(seen + 1)
    if slot < size:
        kept[slot] = item


def _class_name(parsed: ParsedSample, classes: list[str]) -> str | None:
    if parsed.meta.get("label") is not None:
        return str(parsed.meta["label"])
    if 0 <= parsed.label < len(classes):
        return classes[parsed.label]
    return None


def inspect_shards(directory: str | Path, grid: Path | None = None, grid_count: int = 48) -> dict:
    """Counts per shard, caption length stats, class/label histograms, image sizes; optional grid PNG.

    The grid shows `grid_count` samples drawn uniformly (seeded reservoir sampling, so the
    same directory gives the same sheet) from the whole dataset, in dataset order.
    """
    info = read_dataset_info(directory)
    classes = list(info.get("classes") or [])
    rng = random.Random(0)
    per_shard: dict[str, int] = {}
    chars, words, sizes, problems = [], [], Counter(), Counter()
    histograms: dict[str, Counter] = {"label": Counter()}
    picked: list[tuple[int, Image.Image, str, str | None]] = []
    seen = 0
    for path in list_shards(directory):
        name = Path(path).name
        per_shard[name] = 0
        for raw in iter_tar_samples(path, lambda reason, where, exc: problems.update([reason])):
            parsed = parse_sample(raw)
            if isinstance(parsed, SampleProblem):
                problems[parsed.reason] += 1
                continue
            per_shard[name] += 1
            caption = parsed.captions[0]
            chars.append(len(caption))
            words.append(len(caption.split()))
            sizes[f"{parsed.image.width}x{parsed.image.height}"] += 1
            label = _class_name(parsed, classes)
            histograms["label"][label if label is not None else "(none)"] += 1
            for field, value in (parsed.meta.get("labels") or {}).items():
                histograms.setdefault(field, Counter())[str(value)] += 1
            if grid is not None:
                _reservoir_add(picked, (seen, parsed.image, caption, label), seen, grid_count, rng)
            seen += 1
    report = {
        "directory": str(directory),
        "num_samples": seen,
        "shards": per_shard,
        "caption_chars": _length_stats(chars),
        "caption_words": _length_stats(words),
        "image_sizes": dict(sizes.most_common()),
        "histograms": {field: dict(counter.most_common()) for field, counter in histograms.items()},
        "unreadable": dict(problems),
        "build_skipped": info.get("skipped", {}),
        "source": info.get("source"),
        "incomplete_build": incomplete_build(directory),
    }
    if grid is not None and picked:
        report["grid"] = str(write_contact_sheet([item[1:] for item in sorted(picked, key=lambda i: i[0])], grid))
    return report
