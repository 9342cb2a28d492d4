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


def end_to_end_recall(found: np.ndarray, exact: np.ndarray, captions: Sequence[str], query_rows: Sequence[int],
                      direction: str) -> dict[str, float]:
    """`{direction}_R@k` through the index and `exact_{direction}_R@k` from exact neighbours, for each k of KS
    that the (Q, k) ids `found` and `exact` reach: the fraction of queries with a relevant row in the top k."""
    rows_of: dict[str, set[int]] = {captions[q]: set() for q in query_rows}  # rows sharing a query's caption
    for row, caption in enumerate(captions):
        if caption in rows_of:
            rows_of[caption].add(row)
    relevant = [rows_of[captions[q]] for q in query_rows]  # each query's own row included
    report: dict[str, float] = {}
    for prefix, ids in (("", found), ("exact_", exact)):
        for k in (k for k in KS if k <= ids.shape[1]):
            hits = [bool(rel.intersection(row[:k].tolist())) for row, rel in zip(ids, relevant)]
            report[f"{prefix}{direction}_R@{k}"] = round(float(np.mean(hits)), 4)
    report["n"] = len(query_rows)
    return report
