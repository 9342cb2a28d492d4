"""The evaluators `clipline pretrain --val-data DIR` runs inside the training loop.

The loop takes evaluators from its caller (pretrain never imports the layers
above it); this is the one place that decides which ones a val split gets.
"""

from __future__ import annotations

from pathlib import Path

from data_tools.loader import read_dataset_info
from evaluate.errors import EvaluateError
from evaluate.evaluator import Evaluator
from evaluate.retrieval_recall import RetrievalEvaluator
from evaluate.shard_encoding import EncodingConfig
from evaluate.zeroshot import ZeroShotEvaluator


def evaluators_for(val_data: str | Path | None) -> list[Evaluator]:
    """Retrieval R@k on the val shards, and zero-shot too when their dataset.json lists classes."""
    if not val_data:
        return []
    if not Path(val_data).is_dir():
        raise EvaluateError(f"`val_data` {val_data} is not a directory of shards")
    in_process = EncodingConfig(num_workers=0)
    evaluators: list[Evaluator] = [RetrievalEvaluator(data=val_data, encoding=in_process)]
    if read_dataset_info(val_data).get("classes"):
        evaluators.append(ZeroShotEvaluator(data=val_data, encoding=in_process))
    return evaluators
