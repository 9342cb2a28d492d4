"""tune_index's choice: recall judged by its 95 % lower confidence bound on the validation split."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from retrieval.index import tune
from retrieval.index.tune import TuningRow, per_query_recall, tune_index


def row(params: str, recall: float, stderr: float, latency: float) -> TuningRow:
    return TuningRow(params=params, recall_at_k=recall, recall_stderr=stderr, latency_ms_median=latency,
                     latency_ms_p99=latency, batched_qps=1.0)


def test_per_query_recall_counts_the_true_neighbours_found() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 1], [8, 0, 0, 0]])
    assert per_query_recall(found, truth, 4).tolist() == [0.75, 0.25]
    assert per_query_recall(found, truth, 2).tolist() == [0.0, 0.0]  # top 2 of each against top 2


@pytest.mark.parametrize(("validated", "checked", "chosen", "met"), [
    # nprobe=1's held-out mean 0.955 meets 0.95, its lower bound 0.955 - 1.645 x 0.006 = 0.945 does not
    ({"nprobe=1": (0.955, 0.006), "nprobe=2": (0.966, 0.004)}, ["nprobe=1", "nprobe=2"], "nprobe=2", True),
    ({"nprobe=1": (0.962, 0.006), "nprobe=2": (0.966, 0.004)}, ["nprobe=1"], "nprobe=1", True),  # bound 0.9521
    # no bound meets it: the most accurate tuning row, as measured on the held-out half (not measured twice)
    ({"nprobe=1": (0.955, 0.006), "nprobe=2": (0.956, 0.005)}, ["nprobe=1", "nprobe=2"], "nprobe=2", False),
])
def test_validation_accepts_a_setting_by_the_lower_bound_of_its_recall(
        monkeypatch: pytest.MonkeyPatch, validated: dict, checked: list[str], chosen: str, met: bool) -> None:
    tuning = {"nprobe=1": row("nprobe=1", 0.961, 0.004, 0.10), "nprobe=2": row("nprobe=2", 0.969, 0.003, 0.20),
              "nprobe=4": row("nprobe=4", 0.975, 0.002, 0.30)}
    val_queries = np.zeros((5, 8), dtype=np.float32)

    def measure(index, params, queries, truth, k):
        if queries is val_queries:
            recall, stderr = validated[params]
            return row(params, recall, stderr, tuning[params].latency_ms_median)
        return tuning[params]

    monkeypatch.setattr(tune, "measure", measure)
    monkeypatch.setattr(tune, "NPROBE", (1, 2, 4))
    index = faiss.index_factory(8, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    result = tune_index(index, np.ones((5, 8), dtype=np.float32), np.zeros((5, 10), dtype=np.int64),
                        search_params=("nprobe",), nlist=4, target_recall=0.95,
                        validation=(val_queries, np.zeros((5, 10), dtype=np.int64)), log=lambda m: None)
    # the ladder stops once a row's bound is 0.01 past the target: nprobe=2's 0.969 - 1.645 x 0.003 = 0.964
    assert [r.params for r in result.rows] == ["nprobe=1", "nprobe=2"]
    assert [r.params for r in result.validation] == checked
    assert result.chosen == result.validation[-1] and result.chosen.params == chosen
    assert result.chosen.recall_at_k == validated[chosen][0] and result.target_met is met
    assert faiss.extract_index_ivf(index).nprobe == int(chosen.split("=")[1])
