"""The benchmark harness's JSON round-trips, so ``--merge`` can re-measure one section."""

from __future__ import annotations

from benchmarks.paths import PathResult
from benchmarks.precision import PrecisionResult
from benchmarks.report import Results, as_json, markdown
from benchmarks.scale import IndexResult, RecoveryResult


def test_results_round_trip_through_json() -> None:
    r = Results(header=["machine: m", "run: r", "model: x", "photos: 4 files"],
                paths=[PathResult("bare model", 19.5, (60.1, 80.2), (100.0, 120.5), rounds=[19.5]),
                       PathResult("KafkaClient + serve", 17.1, None, None, 14.0, 20.0, [17.1, 16.0])],
                index=[IndexResult("f32", 1000, 2.0, "CollectionState.commit", 0.99, 900.0, 950.0,
                                   2_300_000, 2_200_000, 0.1, 0.1, 0.01)],
                recovery=RecoveryResult(1000, 10, 0.2, 0.3, 700.0, 0.1),
                precision=PrecisionResult({"fp32": 19.0, "bf16": 38.0}, {"fp32": 27.0, "bf16": 50.0},
                                          0.9999, 0.99995, 0.9998, 0.9999),
                notes=["n"])
    again = Results.from_json(as_json(r))
    assert again == r
    assert markdown(again) == markdown(r)
