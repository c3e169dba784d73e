"""Checkpoints of a collection store: the record table and the usearch index as of a log
sequence number, written atomically (temp dir, fsync, rename) and verified by CRC on load.

The directory is renamed into place only when complete (meta.json, with the CRCs, written
last), so a crash mid-checkpoint leaves the previous one in force. The two newest are kept,
so a corrupt newest one falls back to the previous one plus a longer log replay."""

from __future__ import annotations

import logging
import os
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from consumers.runtime.files import fsync_path
from consumers.storage.index import VectorIndex
from consumers.storage.log import MODALITIES
from consumers.storage.store import CollectionStore
from consumers.validation import hnsw
from schemas.errors import CorruptionError
from schemas.records import CollectionSpec, Record

log = logging.getLogger(__name__)

KEEP = 2


def _crc_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _read_verified(path: Path, crc: int) -> bytes:
    data = path.read_bytes()
    if zlib.crc32(data) != crc:
        raise CorruptionError(f"checkpoint {path.parent.name}: {path.name} fails its CRC")
    return data


def _write_file(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def save(store: CollectionStore, root: Path, *, fsync: bool = True) -> Path:
    """Write a checkpoint of ``store`` at ``store.applied_seq`` under ``root``."""
    seq = store.applied_seq
    final = root / f"ckpt-{seq:020d}"
    tmp = root / f".tmp-ckpt-{seq:020d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = [[i, r.key, r.modality.value, r.document, r.uri, r.metadata, r.order]
            for i, r in store.records.items()]
    data = orjson.dumps(rows)
    _write_file(tmp / "records.json", data, fsync)
    files = {"records.json": zlib.crc32(data)}
    if store.index is not None:
        store.index.save(tmp / "index.usearch")
        if fsync:
            with open(tmp / "index.usearch", "rb") as f:
                os.fsync(f.fileno())
        files["index.usearch"] = _crc_file(tmp / "index.usearch")
    meta = {"format": 1, "seq": seq, "next_key": store.next_key, "source": store.source,
            "spec": store.spec.to_dict(), "files": files}
    _write_file(tmp / "meta.json", orjson.dumps(meta), fsync)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    if fsync:
        fsync_path(root)
    for old in sorted(root.glob("ckpt-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_dir(directory: Path, spec: CollectionSpec) -> CollectionStore:
    with ThreadPoolExecutor(1, thread_name_prefix="ckpt-crc") as pool:
        try:
            meta: dict[str, Any] = orjson.loads((directory / "meta.json").read_bytes())
            files: dict[str, int] = meta["files"]
            # The index file is the big one: it is read and checked beside the records parse
            # (file reads and zlib release the GIL) and loaded from that buffer once it
            # matches, so usearch never parses a corrupt file.
            index_bytes = pool.submit(_read_verified, directory / "index.usearch",
                                      files["index.usearch"]) if "index.usearch" in files else None
            data = (directory / "records.json").read_bytes()
            if zlib.crc32(data) != files["records.json"]:
                raise CorruptionError(f"checkpoint {directory.name}: records.json fails its CRC")
            rows = orjson.loads(data)
            del data
            spec.dimension = meta["spec"].get("dimension")
            store = CollectionStore(spec)
            store.next_key = int(meta["next_key"])
            store.applied_seq = int(meta["seq"])
            store.source = dict(meta.get("source") or {})
            records, by_key = store.records, store.by_key
            for row in rows:
                # Rows without the order stamp come from checkpoints written before it.
                id_, key, modality, doc, uri, md = row[:6]
                order = row[6] if len(row) > 6 and row[6] is not None else None
                records[id_] = Record(key, MODALITIES[modality], doc, uri, md,
                                      None if order is None else (order[0], order[1]))
                by_key[key] = id_
            del rows
            store.rebuild_sparse()
            if index_bytes is not None:
                verified = index_bytes.result()
                if spec.dimension:
                    store.index = VectorIndex(spec.dimension, spec.space, spec.dtype,
                                              **hnsw.index_params(spec))
                    store.index.load(verified)
        except (OSError, orjson.JSONDecodeError, KeyError, ValueError) as exc:
            raise CorruptionError(f"checkpoint {directory.name} is unreadable: {exc}") from exc
    return store


def load(root: Path, spec: CollectionSpec,
         rejected: list[str] | None = None) -> CollectionStore | None:
    """The newest valid checkpoint, or None if there is none. Corrupt ones are skipped with
    a warning, never loaded."""
    candidates = sorted(root.glob("ckpt-*"), reverse=True)
    for directory in candidates:
        try:
            return _load_dir(directory, spec)
        except CorruptionError as exc:
            log.error("rejecting checkpoint: %s", exc)
            if rejected is not None:
                rejected.append(directory.name)
    return None


def oldest_kept_seq(root: Path) -> int:
    """The log may be cut only below the oldest checkpoint we could still fall back to."""
    kept = sorted(root.glob("ckpt-*"))
    return int(kept[0].name.split("-")[1]) if kept else 0
