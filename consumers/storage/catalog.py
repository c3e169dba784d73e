"""The set of collections a process owns, each a store recovered from its checkpoint plus
the log tail. ``path=None`` keeps everything in memory (no log, no checkpoints)."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from consumers.runtime.files import atomic_write
from consumers.storage import checkpoint
from consumers.storage.log import MutationLog
from consumers.storage.store import CollectionStore
from schemas.errors import CorruptionError, NotFoundError, UniqueConstraintError
from schemas.records import CollectionSpec, Mutation

log = logging.getLogger(__name__)

#: Called with each committed batch, after it is applied (e.g. the gateway's live queries).
#: Called with each committed batch and the trace context (opaque here) of the ids that have
#: one, which the Kafka replica takes from the state topic's headers.
CommitListener = Callable[["CollectionState", list[Mutation], Mapping[str, Any]], None]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading builds millions of long-lived objects (records, metadata): the cyclic
    collector would scan them again and again and free nothing (~20% of the load time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class CollectionState:
    """A store with its durable log. ``commit`` is the only write path: log first, then index."""

    def __init__(self, spec: CollectionSpec, directory: Path | None, *, fsync: bool,
                 checkpoint_every: int) -> None:
        self.spec = spec
        self.directory = directory
        self.store = CollectionStore(spec)
        self.log: MutationLog | None = None
        self._fsync = fsync
        self._checkpoint_every = checkpoint_every
        self._since_checkpoint = 0
        self.listeners: list[CommitListener] = []
        self.rejected_checkpoints: list[str] = []
        #: When the last batch was committed (time.monotonic): IndexBackfill yields to writes.
        self.last_commit = -math.inf
        #: Names this state's sequence space: a seq means the same mutation only within one
        #: stream (a live query resumes by (stream, seq)). Kept on disk with the log.
        self.stream = uuid.uuid4().hex

    @property
    def damaged(self) -> bool:
        """A torn log tail was cut or a checkpoint was rejected on open: local state may be
        behind what was acknowledged, so a Kafka replica must re-read its source."""
        return bool(self.rejected_checkpoints) or (self.log is not None and self.log.torn_bytes > 0)

    def open(self) -> None:
        if self.directory is None:
            return
        with _gc_paused():
            self._open()

    def _open(self) -> None:
        assert self.directory is not None
        ckpt_root = self.directory / "checkpoints"
        ckpt_root.mkdir(parents=True, exist_ok=True)
        loaded = checkpoint.load(ckpt_root, self.spec, self.rejected_checkpoints)
        if loaded is not None:
            self.store = loaded
        self.log = MutationLog(self.directory / "log", fsync=self._fsync)
        if loaded is None and self.log.first_seq() > 1:
            raise CorruptionError(
                f"collection {self.spec.name}: every checkpoint is corrupt and the log was "
                "truncated below them; rebuild it from the Kafka state topic")
        for batch in self.log.recover(after=self.store.applied_seq):
            # Graph insertion is the slow part of replay: the tail is searched exactly
            # until IndexBackfill moves it into the graph, so the collection opens now.
            self.store.apply(batch.mutations, batch.last_seq, batch.meta, defer_index=True)
            self._since_checkpoint += len(batch.mutations)
        # Never number new entries at or below what a checkpoint already covers.
        self.log.last_seq = max(self.log.last_seq, self.store.applied_seq)
        stream_file = self.directory / "stream"
        if stream_file.exists() and not self.damaged:
            self.stream = stream_file.read_text().strip()
        else:  # a cut log may renumber what clients already saw: a new sequence space
            atomic_write(stream_file, self.stream.encode(), fsync=self._fsync)

    def commit(self, mutations: list[Mutation], meta: dict[str, Any] | None = None, *,
               defer_index: bool = False, traces: Mapping[str, Any] | None = None) -> int:
        """Durably log then apply one batch; returns its last sequence number.
        ``defer_index``: new vectors stay pending (searched exactly) for ``IndexBackfill``."""
        if self.log is not None:
            seq = self.log.append(mutations, meta)
        else:
            seq = self.store.applied_seq + len(mutations) + 1
            for i, m in enumerate(mutations):
                m.seq = self.store.applied_seq + i + 1
        self.store.apply(mutations, seq, meta or {}, defer_index=defer_index)
        self.last_commit = time.monotonic()
        for listener in list(self.listeners):
            try:
                listener(self, mutations, traces or {})
            except Exception:  # the batch is durable and applied; a listener cannot undo it
                log.exception("commit listener failed on %s", self.spec.name)
        self._since_checkpoint += len(mutations)
        if self._since_checkpoint >= self._checkpoint_every:
            self.checkpoint()
        return seq

    def checkpoint(self) -> None:
        if self.directory is None or self.log is None:
            return
        root = self.directory / "checkpoints"
        checkpoint.save(self.store, root, fsync=self._fsync)
        self.log.truncate_before(checkpoint.oldest_kept_seq(root))
        self._since_checkpoint = 0

    def close(self, *, checkpoint_now: bool = True) -> None:
        if checkpoint_now and self._since_checkpoint:
            self.checkpoint()
        if self.log is not None:
            self.log.close()
            self.log = None


class Catalog:
    """The collections of one process by name. The table is copy-on-write: every change
    builds a new dict under a lock and swaps it in whole, so code on the event loop can
    iterate ``collections`` while a worker thread installs specs (the Kafka replica) without
    seeing a dict change size under it or taking a lock."""

    def __init__(self, path: Path | None, *, fsync: bool = True,
                 checkpoint_every: int = 50_000) -> None:
        self.path = path
        self._fsync = fsync
        self._checkpoint_every = checkpoint_every
        self._collections: dict[str, CollectionState] = {}
        self._writing = threading.RLock()  # re-entrant: install renames and deletes

    @property
    def collections(self) -> Mapping[str, CollectionState]:
        """The current table; a snapshot that no later change alters."""
        return self._collections

    def specs(self) -> dict[str, CollectionSpec]:
        """Name -> spec, as the admin rules (``consumers.validation.admin``) read them."""
        return {name: state.spec for name, state in self._collections.items()}

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, CollectionState]]:
        """A copy of the table to change; swapped in and saved when the block succeeds."""
        with self._writing:
            table = dict(self._collections)
            yield table
            self._collections = table
            self._save()

    def _catalog_file(self) -> Path | None:
        return None if self.path is None else self.path / "catalog.json"

    def open(self) -> None:
        file = self._catalog_file()
        if file is None or not file.exists():
            return
        with self._changing() as table:
            for d in orjson.loads(file.read_bytes()):
                spec = CollectionSpec.from_dict(d)
                state = self._state(spec)
                state.open()
                table[spec.name] = state

    def _state(self, spec: CollectionSpec) -> CollectionState:
        directory = None if self.path is None else self.path / "collections" / spec.id
        return CollectionState(spec, directory, fsync=self._fsync,
                               checkpoint_every=self._checkpoint_every)

    def _save(self) -> None:
        file = self._catalog_file()
        if file is None:
            return
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, orjson.dumps([s.spec.to_dict() for s in self._collections.values()]),
                     fsync=self._fsync)

    def install(self, spec: CollectionSpec) -> CollectionState:
        """Adopt a spec decided by ``consumers.validation.admin`` (here, or elsewhere for a Kafka replica
        reading the collections topic): a new collection, a rename or new metadata."""
        with self._writing:
            renamed = self.by_id(spec.id)
            if renamed is not None and renamed.spec.name != spec.name:
                self.rename(renamed.spec.name, spec.name)
            existing = self._collections.get(spec.name)
            if existing is not None:
                if existing.spec.id == spec.id:
                    with self._changing():
                        existing.spec.metadata = spec.metadata
                        existing.spec.hnsw = spec.hnsw
                        existing.store.retune()
                    return existing
                self.delete(spec.name)
            state = self._state(spec)
            state.open()
            with self._changing() as table:
                table[spec.name] = state
            return state

    def by_id(self, collection_id: str) -> CollectionState | None:
        for state in self._collections.values():
            if state.spec.id == collection_id:
                return state
        return None

    def get(self, name: str) -> CollectionState:
        try:
            return self._collections[name]
        except KeyError:
            raise NotFoundError(f"Collection [{name}] does not exist") from None

    def rename(self, old: str, new: str) -> None:
        with self._changing() as table:
            if new in table:
                raise UniqueConstraintError(f"Collection [{new}] already exists")
            state = table.pop(old)
            state.spec.name = new
            table[new] = state

    def delete(self, name: str) -> None:
        with self._changing() as table:
            state = self.get(name)
            state.close(checkpoint_now=False)
            del table[name]
        if state.directory is not None:
            shutil.rmtree(state.directory, ignore_errors=True)

    def close(self) -> None:
        with self._writing:
            for state in self._collections.values():
                state.close()
            self._save()
