"""End-to-end caption<->image recall@k through an index, next to the same figure from exact search.

The pairs are known from the embedding set itself: query row q (its text
embedding, searched over the image index) is relevant to every row whose
caption is the same string (two vendors' drawings of one emoji share a
caption), as in `evaluate.retrieval_recall`. A hit at k: any relevant row in the top k.
The gap between the two figures is what the approximate index costs a user.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (1, 5, 10)


def relevant_rows(captions: Sequence[str], query_rows: Sequence[int]) -> list[set[int]]:
    """For each query row, the set of rows sharing its caption (itself included)."""
    rows_of: dict[str, set[int]] = {captions[q]: set() for q in query_rows}
    for row, caption in enumerate(captions):
        if caption in rows_of:
            rows_of[caption].add(row)
    return [rows_of[captions[q]] for q in query_rows]


def paired_recall(found: np.ndarray, relevant: list[set[int]], ks: Sequence[int] = KS) -> dict[int, float]:
    """{k: fraction of queries with a relevant row among found[:, :k]}; found (Q, >=max k) ids."""
    return {k: float(np.mean([bool(rel.intersection(row[:k].tolist())) for row, rel in zip(found, relevant)]))
            for k in ks if k <= found.shape[1]}


def end_to_end_recall(found: np.ndarray, exact: np.ndarray, captions: Sequence[str], query_rows: Sequence[int],
                      direction: str) -> dict[str, float]:
    """`{direction}_R@k` through the index and `exact_{direction}_R@k` from exact neighbours."""
    relevant = relevant_rows(captions, query_rows)
    report = {f"{direction}_R@{k}": round(v, 4) for k, v in paired_recall(found, relevant).items()}
    report |= {f"exact_{direction}_R@{k}": round(v, 4) for k, v in paired_recall(exact, relevant).items()}
    report["n"] = len(query_rows)
    return report
