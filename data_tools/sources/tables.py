"""The `csv:PATH`, `jsonl:PATH` and `parquet:PATH` sources: one row per image-caption pair.

The image column holds a path (relative paths are relative to the table's directory)
or, in parquet/jsonl, raw bytes / {"bytes": ...}; the caption column holds a string
or a list of caption variants. An optional label column gives classes.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from data_tools.errors import DataError
from data_tools.records import SourceData, SourceRecord
from data_tools.sources import SourceConfig

FORMATS = ("csv", "jsonl", "parquet")


def _rows(path: Path, fmt: str, skipped: Counter) -> Iterator[dict]:
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            yield from csv.DictReader(handle)
    elif fmt == "jsonl":
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if isinstance(row, dict):
                    yield row
                else:
                    skipped["bad_row"] += 1
    else:
        import pyarrow.parquet as pq  # only parquet users pay for the import

        yield from pq.read_table(path).to_pylist()


def _image_fields(value: object, base: Path) -> dict:
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return {"image_bytes": bytes(value), "source": "<bytes>"}
    if value is None or not str(value).strip():
        return {"source": "<empty image cell>"}  # no image: encoded as missing_image
    text = str(value).strip().removeprefix("file://")
    return {"image_path": str(base / text), "source": text}


def _captions(value: object) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value if v is not None)
    return (str(value),) if value is not None else ()


def load_table(path: Path, fmt: str, options: SourceConfig, name: str) -> SourceData:
    """Records of a table, its columns named by `options` (image_column, caption_column, label_column)."""
    columns = {"image": options.image_column, "caption": options.caption_column, "label": options.label_column}
    if fmt not in FORMATS:
        raise DataError(f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError(f"{fmt} file {path} does not exist")
    skipped: Counter = Counter()
    rows = list(_rows(path, fmt, skipped))
    if rows:
        missing = [c for c in columns.values() if c and c not in rows[0]]
        if missing:
            raise DataError(f"{path} has no column {missing[0]!r} (columns: {', '.join(map(str, rows[0]))}); "
                            "name the right ones with `image_column` / `caption_column` / `label_column`")
    label_column = options.label_column
    labels = [str(r.get(label_column) or "").strip() for r in rows] if label_column else []
    classes = sorted({label for label in labels if label})
    records = []
    for index, row in enumerate(rows):
        label = labels[index] if labels and labels[index] else None
        records.append(SourceRecord(key=f"{index:09d}", captions=_captions(row.get(options.caption_column)),
                                    label=label, cls=classes.index(label) if label is not None else None,
                                    labels={label_column: label} if label is not None and label_column else {},
                                    **_image_fields(row.get(options.image_column), path.parent)))
    return SourceData(name=name, records=records, classes=classes,
                      label_fields={label_column: classes} if label_column else {}, skipped=dict(skipped),
                      details={"path": str(path), "columns": columns})
