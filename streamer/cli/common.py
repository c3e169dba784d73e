"""Pieces shared by the ``streamer`` subcommands: store flags and opening a client, the
embedding function for new collections, tables, and the usage error (exit code 2)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from consumers.embedding.models import BUILTIN_MODELS
from consumers.embedding.weights import is_path
from schemas.errors import NotFoundError, UnavailableError
from streamer.client.clients import DEFAULT_MODEL, Client
from streamer.client.collection import Collection
from streamer.settings import Settings


class UsageError(Exception):
    """A mistake in the command line or its inputs: one line on stderr, exit code 2."""


def add_store_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("store (embedded directory, or a `streamer serve` over Kafka)")
    g.add_argument("--path", metavar="DIR",
                   help="embedded store directory (default: STREAMER_DATA_DIR)")
    g.add_argument("--kafka", metavar="BOOTSTRAP",
                   help="Kafka bootstrap servers of a running `streamer serve`")
    g.add_argument("--prefix", metavar="PREFIX",
                   help="Kafka topic prefix (default: STREAMER_KAFKA_TOPIC_PREFIX or 'streamer')")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (for a new collection)")
    g.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME",
                   help=f"OpenCLIP model name (default: the built-in {DEFAULT_MODEL})")
    g.add_argument("--checkpoint", metavar="FILE|TAG",
                   help="OpenCLIP weights: a local .pt/.bin/.safetensors file, an open_clip "
                        "pretrained tag (e.g. laion2b_s34b_b79k for ViT-B-32: downloaded once into "
                        "the Hugging Face cache, HF_HOME; offline it must be there) or 'random'")


@contextmanager
def open_client(args: argparse.Namespace, *, must_exist: bool) -> Iterator[Client]:
    """The embedded store at --path, or a Kafka client when --kafka is given."""
    client: Client
    if args.kafka:
        from streamer.kafka.client import KafkaClient

        overrides = {"kafka_topic_prefix": args.prefix} if args.prefix else {}
        try:
            client = KafkaClient(args.kafka, wait_writes=True, **overrides)
        except KafkaError as exc:
            raise UnavailableError(f"cannot reach Kafka at {args.kafka} ({exc})") from None
    else:
        if args.prefix:
            raise UsageError("--prefix applies to --kafka only")
        path = args.path or Settings.from_env().data_dir
        if not path:
            raise UsageError("give --path DIR (embedded store) or --kafka BOOTSTRAP")
        if must_exist and not (Path(path) / "LOCK").exists():
            raise UsageError(f"no store at {path} (create one with `streamer ingest`)")
        client = Client(path)
    try:
        yield client
    finally:
        client.close()


def get_collection(client: Client, name: str) -> Collection:
    try:
        return client.get_collection(name)
    except NotFoundError:
        raise UsageError(f"no collection named {name!r} (see `streamer collections`)") from None


def embedding_function(args: argparse.Namespace) -> OpenCLIPEmbeddingFunction:
    """The model for a new collection, its weights resolved (downloaded once if need be)
    before anything is written."""
    builtin = BUILTIN_MODELS.get(args.model)
    if args.checkpoint is not None:
        if is_path(args.checkpoint):
            ckpt = Path(args.checkpoint)
            if not ckpt.is_file():
                raise UsageError(f"--checkpoint {ckpt}: no such file")
            ef = OpenCLIPEmbeddingFunction(args.model, checkpoint=str(ckpt.resolve()))
        else:
            ef = OpenCLIPEmbeddingFunction(args.model, checkpoint=args.checkpoint)
        ef.resolve()
        return ef
    if builtin is None:
        raise UsageError(f"--model {args.model} needs --checkpoint FILE|TAG (built-in: "
                         f"{', '.join(BUILTIN_MODELS)})")
    if not builtin.checkpoint_path.is_file():
        raise UsageError(f"the built-in model {args.model} has no trained checkpoint here "
                         f"({builtin.checkpoint_path}); pass --checkpoint FILE")
    return OpenCLIPEmbeddingFunction(args.model)


def describe_model(ef: Any) -> str:
    if isinstance(ef, OpenCLIPEmbeddingFunction):
        if ef.checkpoint is None or ef.checkpoint == ef.model_name:
            return ef.model_name
        return f"{ef.model_name} ({Path(ef.checkpoint).name if is_path(ef.checkpoint) else ef.checkpoint})"
    return "-" if ef is None else type(ef).__name__


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                align: str | None = None) -> None:
    """A plain aligned table; on a terminal, the last column is cut to its width (piped
    output keeps whole values for scripts)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    align = align or "l" * len(headers)
    if sys.stdout.isatty():
        room = shutil.get_terminal_size().columns - sum(w + 2 for w in widths[:-1])
        widths[-1] = max(12, min(widths[-1], room))

    def line(row: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(row):
            if len(c) > widths[i]:
                c = c[:widths[i] - 3] + "..."
            out.append(c.rjust(widths[i]) if align[i] == "r" else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    print(line(headers))
    print(line(["-" * w for w in widths]))
    for row in cells:
        print(line(row))
