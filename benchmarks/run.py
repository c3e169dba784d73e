"""The benchmark suite of issue 6: every figure a ratio measured in the same run.

    python -m benchmarks.run            # small default size: 128 photos, 100k vectors (~5 min)
    python -m benchmarks.run --full     # 256 photos, 1M vectors (~25 min on 2 cores)
    python -m benchmarks.run --full --only paths --merge   # re-measure one section in place

1. ingestion of real photo files (JPEG/PNG, 320x240..1024x768) with add(uris=...): bare
   batched model on preprocessed tensors, embedded Client, KafkaClient + ``streamer serve``,
   and Chroma 1.5.9 (own venv) with the same open_clip config and the very same weights;
2. text and image (URI) query latency per path, websocket included, and query throughput
   with concurrent clients vs one at a time;
3. the usearch index at 100k / 1M CLIP-like vectors, and service recovery (benchmarks.scale);
4. bf16 vs fp32 embedding throughput and agreement.

Writes ``<out>/results.md``, ``results.json`` and ``results.png``; needs the local Kafka
broker (compose/kafka/start) for the Kafka rows. Random weights by default: same compute as
trained ones, and the only weights Chroma and we can both load without a download."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import backends, chroma, paths, precision, report, scale
from benchmarks.common import machine
from streamer.settings import RUNTIME_ENV, with_runtime_env
from streamer.testing.images import SIZES, photo_files

SECTIONS = ("paths", "backends", "precision", "index")
SIZE = {  # images, text q, image q, throughput q, concurrency, precision items, vectors, rounds
    "small": dict(images=128, text=20, image=10, throughput=16, concurrency=8, prec=48,
                  vectors=100_000, rounds=3),
    "full": dict(images=256, text=60, image=30, throughput=64, concurrency=8, prec=128,
                 vectors=1_000_000, rounds=5),
}


def load_avg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def machine_line() -> str:
    import torch
    import usearch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{machine()}, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}; torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), usearch {usearch.__version__}")


def weights(model: str, checkpoint: str | None, work: Path) -> str:
    """A weights file both sides load: the given one, a built-in's, or a seeded random init."""
    if checkpoint:
        return checkpoint
    from consumers.embedding.models import BUILTIN_MODELS

    if model in BUILTIN_MODELS and BUILTIN_MODELS[model].checkpoint_path.exists():
        return str(BUILTIN_MODELS[model].checkpoint_path)
    import open_clip
    import torch

    path = work / f"{model}-random-seed0.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(open_clip.create_model(model).state_dict(), path)
    return str(path)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="256 photos and 1M vectors")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--checkpoint", default=None, help="open_clip weights file (default: random, seed 0)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="of our paths in sections 1-2; auto: the backend and precision that "
                        "backend='auto' picks here (Chroma has fp32 only)")
    p.add_argument("--batch", type=int, default=32, help="model batch size; also add() chunk size")
    p.add_argument("--images", type=int, help="override the number of photo files")
    p.add_argument("--vectors", type=int, help="override the index size of section 3")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--no-chroma", action="store_true", help="skip Chroma in sections 1-2")
    p.add_argument("--merge", action="store_true",
                   help="re-measure the --only sections into <out>/results.json, keeping the others")
    p.add_argument("--rounds", type=int, help="interleaved ingestion rounds (medians reported)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the service during Kafka ingestion (<out>/profile-service.*)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    env = with_runtime_env(force=True)
    if env is not None:
        # Read at process start: re-exec so this process (bare, embedded), the service and
        # Chroma's worker (children inherit it) all run with the same runtime environment.
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.run", *sys.argv[1:]], env)
    args = parse(argv)
    size = dict(SIZE["full" if args.full else "small"])
    size["images"] = args.images or size["images"]
    size["vectors"] = args.vectors or size["vectors"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tmp").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.out / "tmp"))
    ckpt = weights(args.model, args.checkpoint, args.out / "tmp")
    started = datetime.datetime.now(datetime.UTC)
    results = report.Results(header=[
        f"machine: {machine_line()}",
        f"run: {started:%Y-%m-%d %H:%M} UTC, {'--full' if args.full else 'small default'}; "
        f"load average (1/5/15 min) at start {load_avg()}",
        f"model: {args.model}, weights {Path(ckpt).name}"
        f"{' (random init, seed 0: same compute as trained weights)' if not args.checkpoint else ''}; "
        f"our paths {args.precision}, batch {args.batch}; "
        f"{' '.join(f'{k}={v}' for k, v in RUNTIME_ENV.items())} for every path (Chroma's too)",
        f"photos: {size['images']} files, 1/3 PNG 2/3 JPEG, sizes {', '.join(f'{w}x{h}' for w, h in SIZES)}; "
        f"add(uris) {args.batch} per call; queries n_results=5",
    ])
    if args.merge:
        earlier = report.Results.from_json((args.out / "results.json").read_text())
        if earlier.header[3] != results.header[3]:
            raise SystemExit("--merge: the earlier run used other photos; run the same size")
        for name in args.only:
            setattr(earlier, name, None if name == "precision" else [])
        if "index" in args.only:
            earlier.recovery = None
        earlier.notes.append(f"sections {', '.join(args.only)} re-measured in a run started "
                             f"{started:%Y-%m-%d %H:%M} UTC; the others are from the run above")
        results = earlier
    for h in results.header:
        print(h, flush=True)

    def save() -> None:
        results.header[1] = results.header[1].split("; load average at end")[0] + \
            f"; load average at end {load_avg()}"
        (args.out / "results.md").write_text(report.markdown(results))
        (args.out / "results.json").write_text(report.as_json(results))
        report.chart(results, args.out / "results.png")

    def section(name: str) -> None:
        note = f"load average (1/5/15) at start of {name}: {load_avg()}"
        results.notes.append(note)
        print(f"\n== {name} ({note}) ==", flush=True)

    try:
        _run(args, size, work, ckpt, results, section, save)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results.notes.append(f"finished {datetime.datetime.now(datetime.UTC):%H:%M} UTC "
                         f"({(datetime.datetime.now(datetime.UTC) - started).seconds / 60:.1f} min)")
    save()
    print(f"\n{results.header[0]}")
    for t, m, ok in report.targets(results):
        print(f"  {'ok ' if ok else 'MISS'} {t}: {m}")
    print(f"wrote {args.out / 'results.md'}, results.json, results.png", flush=True)


def _run(args: argparse.Namespace, size: dict[str, int], work: Path, ckpt: str,
         results: report.Results, section: Any, save: Any) -> None:
    """The sections named by ``--only``, in the order given there."""
    uris = photo_files(size["images"], work / "photos")
    load = paths.Load(size["text"], size["image"], size["throughput"], size["concurrency"],
                      args.rounds or size["rounds"])
    ef_kwargs: dict[str, Any] = {"model_name": args.model, "checkpoint": ckpt,
                                 "precision": args.precision, "batch_size": args.batch}
    for name in dict.fromkeys(args.only):
        if name == "paths":
            section("ingestion and queries: bare, embedded, Kafka, websocket, Chroma (interleaved)")
            _paths(args, work, ckpt, uris, load, ef_kwargs, results)
            print("\n".join(report.paths_table(results)), flush=True)
        elif name == "backends":
            section("bare model per runtime backend and precision (printed, not in results.json)")
            rows, auto = backends.measure(args.model, ckpt, uris[:size["prec"]], size["prec"],
                                          args.batch)
            backends.print_rows(rows, auto)
        elif name == "precision":
            section("precision")
            results.precision = precision.run(args.model, ckpt, uris[:size["prec"]], size["prec"],
                                              args.batch)
            print("\n".join(report.precision_table(results)), flush=True)
        else:
            section(f"index at {size['vectors']:,} vectors and recovery")
            def index_done(rows: list[scale.IndexResult], recovery: scale.RecoveryResult) -> None:
                results.index, results.recovery = list(rows), recovery
                print("\n".join(report.index_table(results)), flush=True)
                save()

            scale.run(size["vectors"], 100_000, work / "index", index_done)
        save()


def _paths(args: argparse.Namespace, work: Path, ckpt: str, uris: list[str], load: paths.Load,
           ef_kwargs: dict[str, Any], results: report.Results) -> None:
    from benchmarks import profile

    raw = args.out / "tmp" / "profile-service.txt"
    recorder = (lambda pid: profile.record(pid, raw)) if args.profile and profile.available() else None
    run_chroma = None
    if not args.no_chroma:
        python = chroma.ensure_venv()

        def run_chroma(queries: bool) -> paths.PathResult:
            return chroma.run(python, args.model, ckpt, uris, args.batch, load, queries)
    results.paths = paths.measure(work, ef_kwargs, uris, args.batch, load, chroma=run_chroma,
                                  profile=recorder)
    if recorder is not None and raw.exists():
        summary = profile.summarise(raw)
        (args.out / "profile-service.md").write_text(
            f"# py-spy of `streamer serve` during Kafka ingestion (an extra, uncounted round)\n\n"
            f"{results.header[0]}\n\n{summary}\n")
        print(summary, flush=True)


if __name__ == "__main__":
    main()
