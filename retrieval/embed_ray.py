"""`clipline embed --distributor ray`: Ray Data over the shard list, one model per actor of a pool.

Each actor loads the encoder once and embeds whole shards with the local code path
(`retrieval.embed_stream`, then `retrieval.embed.write_part`), so a part written by an
actor is the part a local run writes: arrays under temporary names, metadata last. The
driver lists only the parts not yet complete, so a rerun after a killed job redoes
exactly those. A shard that fails is tried again (`--max-retries`; a crashed actor is
restarted by Ray); one that fails for good ends the run with an error naming its part
and shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from data_tools.distributor import ray_session
from retrieval.errors import RetrievalError

if TYPE_CHECKING:
    from retrieval.embed import EmbedConfig


class ShardEmbedder:
    """A Ray Data actor: one encoder, loaded once; each call embeds whole shards into their parts."""

    def __init__(self, config: EmbedConfig, out: str) -> None:
        from retrieval.encoder_spec import load_encoder

        # decoding in a thread beside the model: an actor owns one CPU, no loader processes inside it
        self.config = replace(config, num_workers=config.num_workers or 0)
        self.out = Path(out)
        self.encoder = load_encoder(config.checkpoint, config.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from retrieval.embed import write_part
        from retrieval.embed_stream import embed_stream

        rows, errors = [], []
        for index, shard in zip(batch["part"], batch["shard"]):
            count, error = -1, ""
            for _ in range(1 + max(0, self.config.distributed.max_retries)):
                try:
                    (vectors,) = embed_stream(self.encoder, [str(shard)], self.config)  # precision already resolved
                    count = write_part(self.out, f"part_{int(index):05d}", vectors, fp16=self.config.fp16)
                    error = ""
                    break
                except Exception as err:  # noqa: BLE001 - reported by the driver, naming the shard
                    error = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            rows.append(count)
            errors.append(error)
        return {"part": batch["part"], "shard": batch["shard"], "rows": np.array(rows), "error": np.array(errors)}


def embed_parts_ray(shards: list[str], out: Path, config: EmbedConfig, log: Callable[[str], None]) -> int:
    """Embed the shards whose parts are not complete yet on a Ray actor pool; returns the rows written."""
    from retrieval.embed import part_complete

    todo = [i for i in range(len(shards)) if not part_complete(out, f"part_{i:05d}")]
    if len(todo) < len(shards):
        log(f"{len(shards) - len(todo)} of {len(shards)} parts already embedded, skipped")
    if config.num_actors < 1:
        raise RetrievalError(f"`num_actors` must be >= 1, got {config.num_actors}")
    if not todo:
        return 0
    with ray_session(config.distributed, RetrievalError) as ray:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # one bar, ours, over all shards
        context.print_on_execution_start = False
        items = [{"part": i, "shard": shards[i]} for i in todo]
        actors = min(config.num_actors, len(todo))
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardEmbedder, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1, num_gpus=1 if config.device.startswith("cuda") else 0,
            fn_constructor_kwargs={"config": config, "out": str(out)},
            max_restarts=config.distributed.max_retries, max_task_retries=config.distributed.max_retries)
        written = 0
        failed: list[tuple[int, str, str]] = []
        with tqdm(total=len(todo), desc=f"embed ({actors} Ray actors)", unit="shard") as bar:
            for row in dataset.iter_rows():
                bar.update(1)
                if row["error"]:
                    failed.append((int(row["part"]), str(row["shard"]), str(row["error"])))
                else:
                    written += int(row["rows"])
    if failed:
        part, shard, error = min(failed)
        raise RetrievalError(f"embed: part_{part:05d} ({Path(shard).name}) failed after "
                             f"{1 + max(0, config.distributed.max_retries)} tries: {error}"
                             f"{f' (and {len(failed) - 1} more)' if len(failed) > 1 else ''}; "
                             "fix the cause and rerun: complete parts are kept and skipped")
    log(f"{len(todo)} shard(s) embedded on {actors} Ray actor(s): {written} samples")
    return written
