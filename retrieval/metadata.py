"""The row metadata of an embedding set / index: one parquet part per shard.

Columns (fixed, so parts from different shards concatenate):

    key      webdataset key (`google_1f600`)
    caption  the caption that was embedded
    shard    shard file name, relative to the data dir (`00000.tar`)
    member   tar member holding the image (`google_1f600.png`)
    offset   byte offset of that member's data in the tar (-1 if unknown)
    size     byte size of that member's data
    label    the sample's `label` field ("" when absent)
    source   the sample's `source` field ("" when absent)
    json     the whole .json record, as a JSON string (any other field)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_tools.atomic_write import atomic_path
from retrieval.errors import RetrievalError

SCHEMA = pa.schema([
    ("key", pa.string()), ("caption", pa.string()), ("shard", pa.string()), ("member", pa.string()),
    ("offset", pa.int64()), ("size", pa.int64()), ("label", pa.string()), ("source", pa.string()),
    ("json", pa.string()),
])


def metadata_row(*, key: str, caption: str, shard: str, member: str, offset: int, size: int, meta: dict) -> dict:
    """One row in SCHEMA's layout from a sample's key, caption, location and .json record."""
    return {
        "key": key, "caption": caption, "shard": shard, "member": member, "offset": offset, "size": size,
        "label": str(meta.get("label") or ""), "source": str(meta.get("source") or ""),
        "json": json.dumps(meta, ensure_ascii=False, sort_keys=True),
    }


def write_metadata(rows: list[dict], path: Path) -> None:
    """Write rows as one parquet file, atomically (temp name, then rename)."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


class MetadataTable:
    """All parts concatenated; row i belongs to vector id i."""

    def __init__(self, files: Sequence[Path]) -> None:
        try:
            tables = [pq.read_table(f, schema=SCHEMA) for f in files]
        except (OSError, pa.ArrowException) as err:
            raise RetrievalError(f"cannot read index metadata ({err}); rebuild the index") from err
        # One chunk: `take` on a many-chunk table costs ~90 ms per query at 1M rows, 0.1 ms on one chunk.
        self.table = pa.concat_tables(tables).combine_chunks() if tables else SCHEMA.empty_table()

    def __len__(self) -> int:
        return self.table.num_rows

    def rows(self, ids: Sequence[int], fields: Sequence[str] | None = None) -> list[dict]:
        """Row dicts for vector ids, in the order given; of the columns `fields` only, where given."""
        table = self.table if fields is None else self.table.select(list(fields))
        return table.take(pa.array(list(ids), type=pa.int64())).to_pylist()

    def id_of(self, key: str) -> int | None:
        """Vector id for a key (first occurrence), or None."""
        return self._ids_by_key.get(key)

    @functools.cached_property
    def _ids_by_key(self) -> dict[str, int]:
        keys = self.table.column("key").to_pylist()
        return {k: i for i, k in reversed(list(enumerate(keys)))}  # reversed: a key's first row is written last
