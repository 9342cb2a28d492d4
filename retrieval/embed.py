"""`clipline embed`: image and text embeddings of every sample in a shard dir.

One part per shard (see `retrieval.embedding_store` for the layout). Each part's
arrays are written under temporary names and renamed, metadata last, so a part
either exists whole or not at all; a rerun skips complete parts, which makes an
interrupted run resumable shard by shard. A shard that is truncated part-way
gives a partial part (`part_N.partial.json` beside its metadata): searchable,
but info.json says `complete: false` and the next run embeds it again. Under `accelerate launch` (or
torchrun) process r embeds shards r, r+world, r+2·world, ... and rank 0
writes info.json once all are done. The vectors come from `retrieval.embed_stream`
(decoding ahead of the model, captions encoded sorted by length, bf16 autocast
where the hardware has it, for precision `auto`; the choice is logged and
recorded in info.json).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from data_tools.atomic_write import atomic_path, remove_stale_temporaries, write_json_atomic
from data_tools.distributor import DistributorConfig
from data_tools.output_paths import check_output_dir
from retrieval.embedding_store import MODALITY_DIRS
from retrieval.encoder_spec import load_encoder
from retrieval.errors import RetrievalError
from retrieval.metadata import metadata_row, write_metadata
from retrieval.recorded_paths import record_checkpoint, record_path, recorded_path
from retrieval.shard_members import MemberSpan, image_members

if TYPE_CHECKING:
    from pretrain.encoder import Encoder
    from retrieval.embed_stream import ShardVectors

EMBEDDINGS_FORMAT = "clipline-embeddings/1"
# beside metadata/part_N.parquet when shard N could be read only part-way
PARTIAL_SUFFIX = ".partial.json"


@dataclass(kw_only=True)
class EmbedConfig:
    """What to embed, with which model, into where."""

    checkpoint: str
    """Run dir, checkpoint dir, or open_clip:MODEL[:WEIGHTS]."""
    data: str
    """Shard dir (DIR/*.tar)."""
    out: str
    """Embedding dir to write (reruns resume it)."""
    batch_size: int = 256
    """Samples per forward pass."""
    fp16: bool = False
    """Store embeddings as float16 (half the disk; index building converts back)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Compute precision of both towers: auto (bf16 autocast where the hardware runs it natively: a CPU with
    avx512_bf16/amx_bf16, or a bf16 GPU; else fp32), bf16 or fp32. bf16 vectors are within cosine 0.999 of
    fp32 ones."""
    num_workers: int | None = None
    """Loader processes decoding images while the model runs (0 = decode in this process; default: 0 on
    <= 2 cores, where decoding then overlaps the model in a thread, else 2)."""
    device: str = "cpu"
    """Torch device for the model."""
    distributed: DistributorConfig = field(default_factory=DistributorConfig)
    """Local (this process, or the ranks of `accelerate launch`) or a Ray actor pool over the shards."""
    num_actors: int = 2
    """With --distributor ray: actors embedding shards at once, each holding one model (one CPU, or one GPU for
    a cuda --device)."""


def embed_shards(config: EmbedConfig, *, encoder: Encoder | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Embed this process's shards (skipping complete parts); rank 0 returns and writes info.json."""
    if config.batch_size < 1:
        raise RetrievalError(f"`batch_size` must be >= 1, got {config.batch_size}")
    check_output_dir(config.out, create=False)  # a wrong --out fails before the model loads
    shards = _list_shards(config.data)
    rank, world, processes = _processes()
    precision, why = _choose_precision(config)
    config = replace(config, precision=precision)  # every rank and Ray actor computes as decided here
    encoder = encoder or load_encoder(config.checkpoint, config.device)
    out = check_output_dir(config.out)
    for folder in (*MODALITY_DIRS.values(), "metadata"):
        check_output_dir(out / folder)
        remove_stale_temporaries(out / folder)  # arrays of a killed run
    _claim(out, config, encoder, rank)
    log(f"precision: {precision} ({why})")
    if config.distributed.distributor == "ray":
        from retrieval.embed_ray import embed_parts_ray

        embed_parts_ray(shards, out, config, log)
    else:
        _embed_local(encoder, shards, shards_of_rank(len(shards), rank, world), out, config, log)
    if processes is not None:
        processes.barrier()
    info = _write_info(out, config, encoder, shards) if rank == 0 else {}
    if rank == 0:
        log(f"{info['count']} samples in {info['parts']} parts, dim {info['dim']}: {out}")
        for part, shard in info["partial"].items():
            log(f"warning: {shard} could be read only part-way ({part} holds its readable samples); "
                "check it with `clipline data validate`, then rerun embed to redo that part")
    return info


def _embed_local(encoder: Encoder, shards: list[str], mine: list[int], out: Path, config: EmbedConfig,
                 log: Callable[[str], None]) -> None:
    """Embed this process's shards `mine` (indices into `shards`) that are not complete yet, decoding ahead
    across shard boundaries (retrieval.embed_stream)."""
    from retrieval.embed_stream import embed_stream

    todo = []
    for n, i in enumerate(mine, 1):
        if part_complete(out, f"part_{i:05d}"):
            log(f"[{n}/{len(mine)}] part_{i:05d} ({Path(shards[i]).name}) already embedded, skipped")
        else:
            todo.append((n, i))
    start = time.perf_counter()
    vectors = embed_stream(encoder, [shards[i] for _, i in todo], config)
    for (n, i), shard_vectors in zip(todo, vectors, strict=True):
        rows = write_part(out, f"part_{i:05d}", shard_vectors, fp16=config.fp16)
        seconds, start = time.perf_counter() - start, time.perf_counter()
        log(f"[{n}/{len(mine)}] part_{i:05d} ({Path(shards[i]).name}): {rows} samples, "
            f"{rows / max(seconds, 1e-9):.1f} samples/s")


def write_part(out: Path, part: str, vectors: ShardVectors, *, fp16: bool) -> int:
    """Write one shard's vectors and metadata as `part` (metadata last); returns the rows written."""
    shard = vectors.shard
    spans = image_members(shard)
    no_image = MemberSpan(member="", offset=-1, size=0)  # where a sample's image member was not found
    rows = [metadata_row(key=key, caption=caption, shard=Path(shard).name, meta=meta,
                         **asdict(spans.get(key, no_image)))
            for key, caption, meta in zip(vectors.keys, vectors.captions, vectors.metas)]
    partial = out / "metadata" / f"{part}{PARTIAL_SUFFIX}"
    unreadable = vectors.skipped.get("corrupt_tar", 0)
    if unreadable:  # before the part's files: a part is never complete-looking without its whole shard
        write_json_atomic(partial, {"shard": Path(shard).name, "reason": "the tar is truncated or unreadable "
                                    "part-way; its readable samples are embedded", "rows": len(rows)})
    for array, folder in ((vectors.images, MODALITY_DIRS["image"]), (vectors.texts, MODALITY_DIRS["text"])):
        with atomic_path(out / folder / f"{part}.npy") as tmp:
            np.save(tmp, array.astype(np.float16 if fp16 else np.float32))
    write_metadata(rows, out / "metadata" / f"{part}.parquet")  # last: marks the part complete
    if not unreadable:
        partial.unlink(missing_ok=True)
    return len(rows)


def shards_of_rank(count: int, rank: int, world: int) -> list[int]:
    """Shard i goes to rank i % world: disjoint, covering, balanced to within one shard."""
    return list(range(rank, count, world))


def part_written(out: Path, part: str) -> bool:
    return all((out / d / f"{part}.npy").is_file() for d in MODALITY_DIRS.values()) and (
        out / "metadata" / f"{part}.parquet").is_file()


def part_complete(out: Path, part: str) -> bool:
    """Written, from a whole shard (a partial part is embedded again by the next run)."""
    return part_written(out, part) and not (out / "metadata" / f"{part}{PARTIAL_SUFFIX}").exists()


def _choose_precision(config: EmbedConfig) -> tuple[str, str]:
    """(fp32 or bf16, why) for config.precision on config.device."""
    import torch

    from pretrain.errors import PretrainError
    from pretrain.precision import choose_precision

    try:
        return choose_precision(config.precision, torch.device(config.device))
    except (PretrainError, RuntimeError) as err:  # an unknown precision or device name
        raise RetrievalError(f"`precision` {config.precision!r} on `device` {config.device!r}: {err}") from err


def _list_shards(data: str) -> list[str]:
    from data_tools.errors import DataError
    from data_tools.loader import list_shards

    try:
        return list_shards(data)
    except DataError as err:
        raise RetrievalError(str(err)) from err


def _processes():
    """(rank, world size, Distributed or None): one process unless launched with several."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    from pretrain.distributed import Distributed

    processes = Distributed()
    return processes.rank, processes.world_size, processes


def _claim(out: Path, config: EmbedConfig, encoder: Encoder, rank: int) -> None:
    """Refuse to mix checkpoints or data dirs in one embedding dir; record ours on first use."""
    info_path = out / "info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("checkpoint_id") != encoder.checkpoint_id:
            raise RetrievalError(f"{out} holds embeddings from checkpoint {info.get('checkpoint')!r} "
                                 f"(id {str(info.get('checkpoint_id'))[:12]}); embed into a fresh `out`")
        recorded = recorded_path(info.get("data_dir"), out)
        if recorded != recorded_path(config.data, "."):
            raise RetrievalError(f"{out} holds embeddings of {recorded}; embed into a fresh `out`")
    elif rank == 0:
        write_json_atomic(info_path, _describe(config, encoder) | {"complete": False})


def _describe(config: EmbedConfig, encoder: Encoder) -> dict:
    """Provenance for info.json; paths relative to the embedding dir (see retrieval.recorded_paths)."""
    out = Path(config.out)
    return {
        "format": EMBEDDINGS_FORMAT, "checkpoint": record_checkpoint(config.checkpoint, out),
        "checkpoint_id": encoder.checkpoint_id, "model": encoder.config.get("model_name"), "dim": encoder.embed_dim,
        "dtype": "float16" if config.fp16 else "float32", "data_dir": record_path(config.data, out),
        "precision": config.precision,
    }


def _write_info(out: Path, config: EmbedConfig, encoder: Encoder, shards: list[str]) -> dict:
    import pyarrow.parquet as pq

    parts = {f"part_{i:05d}": Path(s).name for i, s in enumerate(shards) if part_written(out, f"part_{i:05d}")}
    partial = sorted(p for p in parts if not part_complete(out, p))
    count = sum(pq.ParquetFile(out / "metadata" / f"{p}.parquet").metadata.num_rows for p in parts)
    info = _describe(config, encoder) | {
        "count": count, "parts": len(parts), "complete": len(parts) == len(shards) and not partial,
        "shards": parts, "partial": {p: parts[p] for p in partial}, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(out / "info.json", info)
    return info
