"""The harness's outputs: markdown tables, the targets, a PNG chart and the raw JSON."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.paths import PathResult
from benchmarks.precision import AGREEMENT, PrecisionResult
from benchmarks.scale import IndexResult, RecoveryResult


@dataclasses.dataclass
class Results:
    header: list[str]
    paths: list[PathResult] = dataclasses.field(default_factory=list)
    index: list[IndexResult] = dataclasses.field(default_factory=list)
    recovery: RecoveryResult | None = None
    precision: PrecisionResult | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def path(self, prefix: str) -> PathResult | None:
        return next((p for p in self.paths if p.name.startswith(prefix)), None)

    @classmethod
    def from_json(cls, text: str) -> Results:
        """What ``as_json`` wrote (``--merge`` re-measures some sections of an earlier run)."""
        d = json.loads(text)

        def path(p: dict[str, Any]) -> PathResult:
            for key in ("text_ms", "image_ms"):
                p[key] = None if p[key] is None else tuple(p[key])
            return PathResult(**p)

        return cls(header=d["header"], paths=[path(p) for p in d["paths"]],
                   index=[IndexResult(**x) for x in d["index"]],
                   recovery=None if d["recovery"] is None else RecoveryResult(**d["recovery"]),
                   precision=None if d["precision"] is None else PrecisionResult(**d["precision"]),
                   notes=d["notes"])


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _ms(pair: tuple[float, float] | None) -> tuple[str, str]:
    return ("-", "-") if pair is None else (f"{pair[0]:.1f}", f"{pair[1]:.1f}")


def paired(p: PathResult | None, base: PathResult | None) -> float | None:
    """Median over rounds of p's images/s over base's in the same round: the paths run
    interleaved, so a round's ratio compares runs seconds apart, whatever else the box did."""
    if p is None or base is None:
        return None
    ratios = [a / b for a, b in zip(p.rounds, base.rounds) if a and b]
    if ratios:
        return statistics.median(ratios)
    return p.images_per_s / base.images_per_s if p.images_per_s and base.images_per_s else None


def paths_table(r: Results) -> list[str]:
    bare = r.path("bare")
    out = ["| path | images/s | x bare model | text p50 ms | text p99 ms | image p50 ms | image p99 ms "
           "| sequential q/s | concurrent q/s |", "|---|---|---|---|---|---|---|---|---|"]
    for p in r.paths:
        t50, t99 = _ms(p.text_ms)
        i50, i99 = _ms(p.image_ms)
        out.append(f"| {p.name} | {_f(p.images_per_s)} | {_f(paired(p, bare), '.2f')} | {t50} | {t99} "
                   f"| {i50} | {i99} | {_f(p.sequential_qps)} | {_f(p.concurrent_qps)} |")
    rounds = [p for p in r.paths if p.rounds]
    if rounds:
        out += ["", "images/s per interleaved round (the table gives the median, and the median of "
                "the per-round ratios): " + "; ".join(
                    f"{p.name} {', '.join(f'{x:.1f}' for x in p.rounds)}" for p in rounds)]
    return out


def index_table(r: Results) -> list[str]:
    out = ["| dtype | vectors | built via | build s | vectors/s | recall@10 | QPS single | QPS batch "
           "| resident B/vec (x raw) | file B/vec (x raw) | save s | restore s | view s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in r.index:
        raw = x.raw_bytes
        out.append(f"| {x.dtype} | {x.n:,} | {x.build_path} | {x.build_s:.1f} | {x.n / x.build_s:,.0f} "
                   f"| {x.recall:.3f} | {x.qps_single:,.0f} | {x.qps_batch:,.0f} "
                   f"| {x.memory_bytes / x.n:,.0f} ({x.memory_bytes / raw:.2f}) "
                   f"| {x.file_bytes / x.n:,.0f} ({x.file_bytes / raw:.2f}) "
                   f"| {x.save_s:.2f} | {x.restore_s:.2f} | {x.view_s:.3f} |")
    if r.recovery:
        rc = r.recovery
        out += ["", f"Recovery: `CollectionState.open()` on a checkpoint of {rc.n:,} records plus a "
                f"log tail of {rc.tail:,}: **{rc.open_s:.2f} s** to serving (checkpoint written in "
                f"{rc.checkpoint_s:.2f} s; warm page cache). The tail is searched exactly until "
                f"backfilled into the graph: {rc.qps_pending:,.0f} single queries/s meanwhile, "
                f"graph complete {rc.backfill_s:.1f} s later. Resident = memory growth of a fresh "
                "process restoring the saved index; raw = n x 512 x bytes per scalar."]
    return out


def precision_table(r: Results) -> list[str]:
    p = r.precision
    if p is None:
        return []
    out = ["| precision | images/s | x fp32 | texts/s | x fp32 |", "|---|---|---|---|---|"]
    for k in ("fp32", "bf16"):
        out.append(f"| {k} | {p.images_per_s[k]:.1f} | {p.images_per_s[k] / p.images_per_s['fp32']:.2f} "
                   f"| {p.texts_per_s[k]:.1f} | {p.texts_per_s[k] / p.texts_per_s['fp32']:.2f} |")
    verdict = "keeps" if p.keeps_cosine else "does NOT keep"
    out += ["", f"bf16 vs fp32 cosine: images min {p.image_cos_min:.5f} / mean {p.image_cos_mean:.5f}, "
            f"texts min {p.text_cos_min:.5f} / mean {p.text_cos_mean:.5f}: bf16 **{verdict}** "
            f"cosine ≥ {AGREEMENT}."]
    return out


def targets(r: Results) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met?) for each of issue 6's targets that this run measured."""
    out: list[tuple[str, str, bool | None]] = []
    bare, kafka, chroma = r.path("bare"), r.path("KafkaClient"), r.path("Chroma")
    x = paired(kafka, bare)
    if x is not None:
        out.append(("Kafka ingestion ≥ 0.9 x bare batched model", f"{x:.2f} x", x >= 0.9))
    x = paired(kafka, chroma)
    if x is not None:
        out.append(("Kafka ingestion ≥ 3 x Chroma", f"{x:.2f} x", x >= 3))
    if bare and kafka and bare.text_ms and kafka.text_ms:
        d = kafka.text_ms[0] - bare.text_ms[0]
        out.append(("reply-topic text query p50 ≤ bare text encode p50 + 15 ms",
                    f"{kafka.text_ms[0]:.1f} vs {bare.text_ms[0]:.1f} ms (+{d:.1f})", d <= 15))
    f32 = next((x for x in r.index if x.dtype == "f32"), None)
    if f32:
        out.append((f"recall@10 ≥ 0.95 at default search settings ({f32.n:,} vectors)",
                    f"{f32.recall:.3f}", f32.recall >= 0.95))
    f16 = next((x for x in r.index if x.dtype == "f16"), None)
    if f16:
        x = f16.memory_bytes / f16.raw_bytes
        out.append((f"f16 memory ≤ 1.3 x raw ({f16.n:,} vectors)",
                    f"{x:.2f} x (file {f16.file_bytes / f16.raw_bytes:.2f} x)", x <= 1.3))
    if r.recovery:
        out.append((f"recovery ≤ 10 s ({r.recovery.n:,} records)", f"{r.recovery.open_s:.2f} s",
                    r.recovery.open_s <= 10))
    if r.precision:
        out.append(("bf16 keeps cosine ≥ 0.999 vs fp32",
                    f"{min(r.precision.image_cos_min, r.precision.text_cos_min):.5f}",
                    r.precision.keeps_cosine))
    return out


def markdown(r: Results) -> str:
    lines = ["# Benchmark results", "", *[f"- {h}" for h in r.header], ""]
    if r.paths:
        lines += ["## Ingestion and queries", "", *paths_table(r), ""]
    if r.index:
        lines += ["## Index at scale (512-d CLIP-like clustered vectors, default search settings)", "",
                  *index_table(r), ""]
    if r.precision:
        lines += ["## Embedding precision", "", *precision_table(r), ""]
    rows = targets(r)
    if rows:
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {'yes' if ok else 'NO'} |" for t, m, ok in rows]
        lines.append("")
    if r.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in r.notes], ""]
    return "\n".join(lines)


def chart(r: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    named = [p for p in r.paths if p.images_per_s]
    ax = axes[0][0]
    ax.barh([p.name for p in named], [p.images_per_s or 0 for p in named], color="tab:blue")
    ax.set_xlabel("images/s (higher is better)")
    ax.set_title("Ingestion: add(uris=...)")
    ax.invert_yaxis()
    ax = axes[0][1]
    q = [p for p in r.paths if p.text_ms]
    ys = range(len(q))
    ax.barh([y - 0.2 for y in ys], [p.text_ms[0] for p in q if p.text_ms], 0.4, label="text p50")
    ax.barh([y + 0.2 for y in ys], [p.image_ms[0] if p.image_ms else 0 for p in q], 0.4,
            label="image (URI) p50")
    ax.set_yticks(list(ys), [p.name for p in q])
    ax.invert_yaxis()
    ax.set_xlabel("ms (lower is better)")
    ax.set_title("Query latency")
    ax.legend()
    ax = axes[1][0]
    if r.index:
        labels = [f"{x.dtype} x{x.n:,}" for x in r.index]
        ax.bar(labels, [x.memory_bytes / x.n for x in r.index], label="resident B/vector (restored)")
        ax.bar(labels, [x.raw_bytes / x.n for x in r.index], 0.4, label="raw vector bytes")
        for i, x in enumerate(r.index):
            ax.text(i, x.memory_bytes / x.n, f"recall {x.recall:.3f}", ha="center", va="bottom")
        ax.set_title("Index memory per vector and recall@10")
        ax.legend()
    ax = axes[1][1]
    if r.precision:
        p = r.precision
        ax.bar(["images fp32", "images bf16", "texts fp32", "texts bf16"],
               [p.images_per_s["fp32"], p.images_per_s["bf16"], p.texts_per_s["fp32"],
                p.texts_per_s["bf16"]], color=["tab:gray", "tab:green"] * 2)
        ax.set_ylabel("items/s")
        ax.set_title(f"Precision (cosine bf16 vs fp32 ≥ {min(p.image_cos_min, p.text_cos_min):.4f})")
    fig.suptitle(r.header[0], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def as_json(r: Results) -> str:
    def conv(o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {k: conv(v) for k, v in dataclasses.asdict(o).items()}
        return o

    return json.dumps({"header": r.header, "paths": [conv(p) for p in r.paths],
                       "index": [conv(x) for x in r.index], "recovery": conv(r.recovery),
                       "precision": conv(r.precision), "notes": r.notes,
                       "targets": targets(r)}, indent=1)
