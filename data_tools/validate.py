"""`clipline data validate DIR`: read every sample of every shard and report corrupt ones."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from data_tools.build_marker import incomplete_build
from data_tools.loader import list_shards, read_dataset_info
from data_tools.sample_fields import SampleProblem, parse_sample
from data_tools.tar_samples import iter_tar_samples


def _problem(shard: str, reason: str, detail: str, key: str | None = None) -> dict:
    return {"shard": shard, "key": key, "reason": reason, "detail": detail}


def _validate_shard(path: str) -> tuple[int, list[dict]]:
    """(readable samples, problems) for one tar."""
    name, good, problems = Path(path).name, 0, []

    def on_tar_error(reason: str, where: str, exc: Exception) -> None:
        problems.append(_problem(name, reason, f"{type(exc).__name__}: {exc}"))

    for raw in iter_tar_samples(path, on_tar_error):
        parsed = parse_sample(raw)
        if isinstance(parsed, SampleProblem):
            problems.append(_problem(name, parsed.reason, parsed.detail, parsed.key))
        else:
            good += 1
    return good, problems


def validate_shards(directory: str | Path) -> dict:
    """Report: per-shard good/expected counts, every problem found, and `ok` (no problem at all).

    Besides unreadable tars and samples, a shard holding fewer samples than dataset.json
    says (e.g. truncated at a member boundary), a listed shard that is missing, and an
    interrupted `clipline data build` (`build_marker`) count as problems.
    """
    shards = list_shards(directory)
    expected = read_dataset_info(directory).get("shards", {})
    per_shard, problems = {}, []
    unfinished = incomplete_build(directory)
    if unfinished:
        problems.append(_problem("(build)", "incomplete_build", unfinished))
    for path in shards:
        good, shard_problems = _validate_shard(path)
        name = Path(path).name
        want = expected.get(name)
        if want is not None and good + len([p for p in shard_problems if p["key"]]) < want:
            shard_problems.append(_problem(name, "missing_samples", f"dataset.json lists {want}, tar holds fewer"))
        per_shard[name] = {"good": good, "expected": want, "problems": len(shard_problems)}
        problems.extend(shard_problems)
    missing = sorted(set(expected) - set(per_shard))
    problems.extend(_problem(name, "missing_shard", "listed in dataset.json") for name in missing)
    return {
        "directory": str(directory),
        "num_shards": len(shards),
        "num_good": sum(s["good"] for s in per_shard.values()),
        "num_problems": len(problems),
        "problems_by_reason": dict(Counter(p["reason"] for p in problems)),
        "shards": per_shard,
        "problems": problems,
        "ok": not problems,
    }
