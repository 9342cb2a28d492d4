"""Plain-text renderings of the inspect and validate reports (the JSON is the record)."""

from __future__ import annotations

TOP_LABELS = 12


def _stats(stats: dict) -> str:
    if not stats:
        return "n/a"
    return f"min {stats['min']}, mean {stats['mean']}, median {stats['median']}, max {stats['max']}"


def inspect_text(report: dict) -> str:
    lines = [
        f"{report['directory']}: {report['num_samples']} samples in {len(report['shards'])} shards"
        + (f" (source {report['source']})" if report.get("source") else ""),
        "shards: " + ", ".join(f"{name} {count}" for name, count in report["shards"].items()),
        f"caption chars: {_stats(report['caption_chars'])}",
        f"caption words: {_stats(report['caption_words'])}",
        "image sizes: " + ", ".join(f"{size} x{n}" for size, n in report["image_sizes"].items()),
    ]
    for field, histogram in report["histograms"].items():
        shown = list(histogram.items())[:TOP_LABELS]
        more = len(histogram) - len(shown)
        lines.append(f"{field} ({len(histogram)} values): " + ", ".join(f"{name} {n}" for name, n in shown)
                     + (f", ... {more} more" if more > 0 else ""))
    if report["build_skipped"]:
        lines.append("skipped at build: " + ", ".join(f"{r} {n}" for r, n in report["build_skipped"].items()))
    if report["unreadable"]:
        lines.append("unreadable now: " + ", ".join(f"{r} {n}" for r, n in report["unreadable"].items())
                     + " (run `clipline data validate` for details)")
    if report.get("grid"):
        lines.append(f"contact sheet: {report['grid']}")
    if report.get("incomplete_build"):
        lines.append(report["incomplete_build"])
    return "\n".join(lines)


def validate_text(report: dict) -> str:
    lines = [
        f"{name}: {s['good']} good" + (f" of {s['expected']} listed" if s["expected"] is not None else "")
        + (f", {s['problems']} problem(s)" if s["problems"] else "")
        for name, s in report["shards"].items()
    ]
    for problem in report["problems"]:
        where = problem["shard"] + (f":{problem['key']}" if problem["key"] else "")
        lines.append(f"CORRUPT {where}: {problem['reason']}" + (f" ({problem['detail']})" if problem["detail"] else ""))
    verdict = "OK" if report["ok"] else f"FOUND {report['num_problems']} problem(s): {report['problems_by_reason']}"
    lines.append(f"{report['directory']}: {report['num_good']} good samples in {report['num_shards']} shards; {verdict}")
    return "\n".join(lines)
