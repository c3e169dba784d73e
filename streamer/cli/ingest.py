"""``streamer ingest PATH|GLOB --collection NAME``: walk a folder (or a glob), add images by
URI and text files as documents, in batches, with a progress bar.

Ids are the files' paths relative to the walked folder, so a second run skips what is
already there (checked with ``get(ids=...)`` per batch): an interrupted ingest resumes. The
collection's loader reads only under that folder. A batch that fails is retried file by
file, so one bad file is reported and the others still go in."""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from tqdm import tqdm

from consumers.loading.load import ImageLoader
from schemas.errors import NotFoundError, StreamerError
from streamer.cli.common import (
    UsageError,
    add_model_args,
    add_store_args,
    embedding_function,
    open_client,
)
from streamer.client.clients import Client
from streamer.client.collection import Collection
from streamer.settings import Settings

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst"})


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    path: Path
    kind: Literal["image", "text"]


def discover(target: str) -> tuple[Path, list[Item], int]:
    """The base folder, the images and text files under it (hidden ones left out) and how
    many other files were ignored."""
    if glob.has_magic(target):
        parts = Path(target).parts
        fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        base = Path(*parts[:fixed]) if fixed else Path(".")
        files = [Path(f) for f in sorted(glob.glob(target, recursive=True))]
    else:
        path = Path(target)
        if path.is_dir():
            base, files = path, sorted(path.rglob("*"))
        elif path.is_file():
            base, files = path.parent, [path]
        else:
            raise UsageError(f"{target}: no such file or folder")
    # Absolute, not resolved: a symlink that leads out of the folder is refused by the loader.
    base = base.absolute()
    items: list[Item] = []
    ignored = 0
    for f in files:
        if not f.is_file():
            continue
        rel = Path(os.path.relpath(f.absolute(), base))
        if any(part.startswith(".") for part in rel.parts):
            continue
        suffix = f.suffix.lower()
        if suffix in IMAGE_SUFFIXES or suffix in TEXT_SUFFIXES:
            items.append(Item(rel.as_posix(), base / rel, "image" if suffix in IMAGE_SUFFIXES else "text"))
        else:
            ignored += 1
    if not items:
        raise UsageError(f"{target}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) or text files "
                         f"({', '.join(sorted(TEXT_SUFFIXES))}) found")
    return base, items, ignored


class Progress:
    """Progress on stderr, drawn by tqdm: a live bar on a terminal; on a pipe or a log file,
    a line per 10% (tqdm's carriage-return redraws would pile up in a file)."""

    FORMAT = "{desc} {bar:24} {percentage:3.0f}%  {n_fmt}/{total_fmt}  {rate_noinv_fmt}  ETA {remaining}"

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr) -> None:
        self.total, self.label, self.stream = total, label, stream
        self.done = 0
        self.started = time.monotonic()
        self._last_decile = 0
        self._bar = tqdm(total=total, desc=label, file=stream, unit="items",
                         bar_format=self.FORMAT, disable=not stream.isatty())

    def advance(self, n: int) -> None:
        self.done += n
        self._bar.update(n)
        if self._bar.disable and self.total and self.done * 10 // self.total > self._last_decile:
            self._last_decile = self.done * 10 // self.total
            self.stream.write(self.render() + "\n")
            self.stream.flush()

    def render(self) -> str:
        line: str = tqdm.format_meter(self.done, self.total, time.monotonic() - self.started,
                                      prefix=self.label, unit="items", bar_format=self.FORMAT,
                                      ascii=True)
        return line

    def close(self) -> None:
        self._bar.close()


def _collection(client: Client, args: argparse.Namespace, base: Path, items: list[Item]) -> Collection:
    """The existing collection if it can take these files, else a new one with the model and
    an image loader confined to ``base``."""
    try:
        col = client.get_collection(args.collection)
    except NotFoundError:
        return client.create_collection(args.collection, embedding_function=embedding_function(args),
                                        data_loader=ImageLoader(roots=[base]))
    if col.embedding_function is None:
        raise UsageError(f"collection {args.collection!r} has no built-in embedding function; "
                         "`streamer ingest` cannot embed for it")
    loader = col.data_loader
    if any(i.kind == "image" for i in items):
        roots = loader.roots if isinstance(loader, ImageLoader) else []
        if roots is not None and not any(base.resolve().is_relative_to(r) for r in roots):
            raise UsageError(f"collection {args.collection!r} loads images only under "
                             f"{', '.join(map(str, roots)) or 'nowhere'}; ingest {base} into "
                             "another collection")
    return col


def _documents(items: Sequence[Item], max_bytes: int,
               failures: list[tuple[str, str]]) -> list[tuple[Item, str]]:
    out = []
    for it in items:
        try:
            data = it.path.read_bytes()
            if len(data) > max_bytes:
                raise ValueError(f"over the document limit of {max_bytes} bytes")
            text = data.decode("utf-8").strip()
            if not text:
                raise ValueError("empty")
            out.append((it, text))
        except (OSError, ValueError) as exc:
            failures.append((it.id, str(exc)))
    return out


def _add(col: Collection, items: Sequence[Item], docs: Sequence[str] | None,
         failures: list[tuple[str, str]]) -> int:
    """Add one batch of a kind; on failure, retry file by file to name the bad ones."""
    def add(batch: Sequence[Item], texts: Sequence[str] | None) -> None:
        metas = [{"path": it.id, "kind": it.kind} for it in batch]
        if texts is None:
            col.add(ids=[it.id for it in batch], uris=[str(it.path) for it in batch], metadatas=metas)
        else:
            col.add(ids=[it.id for it in batch], documents=list(texts), metadatas=metas)

    if not items:
        return 0
    try:
        add(items, docs)
        return len(items)
    except StreamerError as exc:
        if exc.retriable:
            raise
        if len(items) == 1:
            failures.append((items[0].id, str(exc)))
            return 0
    return sum(_add(col, [it], None if docs is None else [docs[i]], failures)
               for i, it in enumerate(items))


def run_ingest(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    base, items, ignored = discover(args.target)
    max_doc = Settings.from_env().max_document_bytes
    started = time.monotonic()
    added = skipped = 0
    failures: list[tuple[str, str]] = []
    with open_client(args, must_exist=False) as client:
        col = _collection(client, args, base, items)
        progress = Progress(len(items), "ingest")
        try:
            for start in range(0, len(items), args.batch_size):
                batch = items[start:start + args.batch_size]
                have = set(col.get(ids=[it.id for it in batch], include=[])["ids"])
                todo = [it for it in batch if it.id not in have]
                skipped += len(batch) - len(todo)
                added += _add(col, [it for it in todo if it.kind == "image"], None, failures)
                texts = _documents([it for it in todo if it.kind == "text"], max_doc, failures)
                added += _add(col, [it for it, _ in texts], [t for _, t in texts], failures)
                progress.advance(len(batch))
        finally:
            progress.close()
    _summary(args.collection, added, skipped, ignored, failures, time.monotonic() - started)
    return 1 if failures else 0


def _summary(name: str, added: int, skipped: int, ignored: int, failures: list[tuple[str, str]],
             seconds: float) -> None:
    extra = [f"{skipped} already there"] if skipped else []
    extra += [f"{ignored} other files ignored"] if ignored else []
    print(f"ingested {added} new item{'s' * (added != 1)} into {name!r} in {seconds:.1f} s"
          + (f" ({', '.join(extra)})" if extra else ""))
    if failures:
        print(f"{len(failures)} failed:", file=sys.stderr)
        for id_, reason in failures[:20]:
            print(f"  {id_}: {reason}", file=sys.stderr)
        if len(failures) > 20:
            print(f"  ... and {len(failures) - 20} more", file=sys.stderr)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "ingest", help="add a folder of images and text files to a collection",
        description=__doc__.split("\n\n")[0] + " Exit code 1 if any file failed.")
    p.add_argument("target", metavar="PATH|GLOB", help="a folder (walked recursively), a file, or "
                   "a quoted glob such as 'photos/**/*.jpg'")
    p.add_argument("--collection", "-c", required=True, metavar="NAME")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="files per add (default: 64)")
    add_store_args(p)
    add_model_args(p)
    p.set_defaults(func=run_ingest)
    return p
