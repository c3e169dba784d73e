"""The modality-overwrite log: append-only, CRC-framed, fsynced.

Every applied mutation is written here before it touches the index, with a sequence number.
Mutations are grouped in batches closed by a commit frame carrying the batch's metadata
(e.g. the Kafka offsets it covers), so a torn tail -- a batch without its commit frame, or a
frame failing its CRC -- is detected on open, cut off, and never replayed half-applied.

Frame: ``<magic:2s><length:u32><crc32:u32><seq:u64>`` then ``length`` bytes of body; the CRC
covers seq and body. Body: ``<json_len:u32><json><float32 vector bytes>``."""

from __future__ import annotations

import itertools
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from consumers.runtime.files import fsync_path
from schemas.records import Modality, Mutation

log = logging.getLogger(__name__)

MAGIC = b"SL"
_HEAD = struct.Struct("<2sIIQ")
_SEQ = struct.Struct("<Q")
_JLEN = struct.Struct("<I")
_COMMIT = "commit"
#: Modality by value: a dict lookup, not the Enum constructor (a hot path at replay).
MODALITIES = {m.value: m for m in Modality}


@dataclass(slots=True)
class CommittedBatch:
    last_seq: int
    mutations: list[Mutation]
    meta: dict[str, Any] = field(default_factory=dict)


def _encode(seq: int, kind: str, mutation: Mutation | None, meta: dict[str, Any] | None) -> bytes:
    if mutation is None:
        head: dict[str, Any] = {"k": kind, "meta": meta or {}}
        vec = b""
    else:
        head = {"k": kind, "id": mutation.id,
                "m": mutation.modality.value if mutation.modality else None,
                "d": mutation.document, "u": mutation.uri, "md": mutation.metadata}
        if mutation.order is not None:
            head["o"] = mutation.order
        vec = b"" if mutation.vector is None else np.ascontiguousarray(
            mutation.vector, dtype=np.float32).tobytes()
    js = orjson.dumps(head)
    body = _JLEN.pack(len(js)) + js + vec
    crc = zlib.crc32(body, zlib.crc32(_SEQ.pack(seq)))
    return _HEAD.pack(MAGIC, len(body), crc, seq) + body


def _decode(seq: int, body: bytes) -> tuple[str, Mutation | None, dict[str, Any]]:
    (jlen,) = _JLEN.unpack_from(body)
    head = orjson.loads(body[4:4 + jlen])
    kind = head["k"]
    if kind == _COMMIT:
        return kind, None, head["meta"]
    raw = body[4 + jlen:]
    vector = np.frombuffer(raw, dtype=np.float32).copy() if raw else None
    modality = MODALITIES[head["m"]] if head["m"] else None
    order = head.get("o")  # absent in embedded mode and in frames written before it existed
    return kind, Mutation(op=kind, id=head["id"], modality=modality, document=head["d"],
                          uri=head["u"], metadata=head["md"], vector=vector, seq=seq,
                          order=None if order is None else (order[0], order[1])), {}


class MutationLog:
    """Segmented log in one directory. Not thread-safe: one writer per collection."""

    def __init__(self, directory: Path, *, fsync: bool = True,
                 segment_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._file: BinaryIO | None = None
        self.last_seq = 0
        self.torn_bytes = 0  # bytes cut from the tail on open, for tests and metrics

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.log"))

    def first_seq(self) -> int:
        segments = self._segments() if self.directory.exists() else []
        return int(segments[0].stem) if segments else 1

    def recover(self, after: int = 0) -> Iterator[CommittedBatch]:
        """Scan the log, yield every committed batch past sequence ``after`` (what a
        checkpoint already covers), and cut any torn tail. Iterate to the end before
        appending: the file opens for append when the scan is done."""
        self.directory.mkdir(parents=True, exist_ok=True)
        segments = self._segments()
        for i, seg in enumerate(segments):
            if i + 1 < len(segments) and int(segments[i + 1].stem) - 1 <= after:
                continue  # every frame of it is covered: not even read
            good_end, batches, last = self._scan(seg, after)
            self.last_seq = max(self.last_seq, last)
            yield from batches
            size = seg.stat().st_size
            if good_end < size:
                self.torn_bytes += size - good_end
                log.warning("log %s: cutting %d torn bytes at offset %d",
                            seg, size - good_end, good_end)
                with open(seg, "r+b") as f:
                    f.truncate(good_end)
                    os.fsync(f.fileno())
                # Anything after a torn frame is unreachable: later segments go too.
                for later in segments[i + 1:]:
                    later.unlink()
                break
        segments = self._segments()
        if segments:
            # A segment is named after its first sequence: an empty newest segment (rolled,
            # then the full one before it was truncated away) still fixes where numbering goes on.
            self.last_seq = max(self.last_seq, int(segments[-1].stem) - 1)
            self._file = open(segments[-1], "ab")
        else:
            self._new_segment()

    def _scan(self, seg: Path, after: int) -> tuple[int, list[CommittedBatch], int]:
        """(end of the last whole batch, the batches past ``after``, the last committed seq)."""
        data = seg.read_bytes()
        pos = good_end = 0
        pending: list[Mutation] = []
        batches: list[CommittedBatch] = []
        last = 0
        while pos + _HEAD.size <= len(data):
            magic, length, crc, seq = _HEAD.unpack_from(data, pos)
            end = pos + _HEAD.size + length
            if magic != MAGIC or end > len(data):
                break
            if seq <= after:
                # Covered by the checkpoint, which only ever ends on a commit frame: skipped
                # undecoded (a torn tail is always past the checkpoint).
                pos = good_end = end
                last = seq
                continue
            body = data[pos + _HEAD.size:end]
            if zlib.crc32(body, zlib.crc32(_SEQ.pack(seq))) != crc:
                break
            kind, mutation, meta = _decode(seq, body)
            if kind not in ("put", "delete", _COMMIT):
                break
            pos = end
            if mutation is not None:
                pending.append(mutation)
            else:
                batches.append(CommittedBatch(seq, pending, meta))
                pending = []
                good_end = pos
                last = seq
        return good_end, batches, last

    def read_after(self, after: int) -> Iterator[CommittedBatch]:
        """The committed batches past ``after``, read-only (no cut, no reopen): for a reader
        holding the collection lock, so no append is in progress."""
        segments = self._segments()
        for i, seg in enumerate(segments):
            if i + 1 < len(segments) and int(segments[i + 1].stem) - 1 <= after:
                continue
            yield from self._scan(seg, after)[1]

    def _new_segment(self) -> None:
        if self._file is not None:
            self._file.close()
        path = self.directory / f"{self.last_seq + 1:020d}.log"
        self._file = open(path, "ab")
        if self._fsync:
            fsync_path(self.directory)

    def append(self, mutations: list[Mutation], meta: dict[str, Any] | None = None) -> int:
        """Durably append one batch; assigns ``seq`` to each mutation; returns the last seq."""
        if self._file is None:
            raise RuntimeError("log is not open")
        frames = []
        seq = self.last_seq
        for m in mutations:
            seq += 1
            m.seq = seq
            frames.append(_encode(seq, m.op, m, None))
        seq += 1
        frames.append(_encode(seq, _COMMIT, None, meta))
        self._file.write(b"".join(frames))
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        self.last_seq = seq
        if self._file.tell() >= self._segment_bytes:
            self._new_segment()
        return seq

    def truncate_before(self, seq: int) -> None:
        """Drop whole segments whose every frame is at or below ``seq`` (a checkpoint covers them)."""
        segments = self._segments()
        for seg, nxt in itertools.pairwise(segments):
            if int(nxt.stem) - 1 <= seq:
                seg.unlink()

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
