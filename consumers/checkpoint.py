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
from pathlib import Path
from typing import Any

import orjson

from consumers.index import VectorIndex
from consumers.log import fsync_dir
from consumers.store import CollectionStore
from schemas.errors import CorruptionError
from schemas.records import CollectionSpec, Modality, Record

log = logging.getLogger(__name__)

KEEP = 2


def _crc_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


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
    rows = [[i, r.key, r.modality.value, r.document, r.uri, r.metadata]
            for i, r in store.records.items()]
    _write_file(tmp / "records.json", orjson.dumps(rows), fsync)
    files = {"records.json": _crc_file(tmp / "records.json")}
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
        fsync_dir(root)
    for old in sorted(root.glob("ckpt-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_dir(directory: Path, spec: CollectionSpec) -> CollectionStore:
    try:
        meta: dict[str, Any] = orjson.loads((directory / "meta.json").read_bytes())
        for name, crc in meta["files"].items():
            if _crc_file(directory / name) != crc:
                raise CorruptionError(f"checkpoint {directory.name}: {name} fails its CRC")
        rows = orjson.loads((directory / "records.json").read_bytes())
    except (OSError, orjson.JSONDecodeError, KeyError) as exc:
        raise CorruptionError(f"checkpoint {directory.name} is unreadable: {exc}") from exc
    spec.dimension = meta["spec"].get("dimension")
    store = CollectionStore(spec)
    store.next_key = int(meta["next_key"])
    store.applied_seq = int(meta["seq"])
    store.source = dict(meta.get("source") or {})
    for id_, key, modality, doc, uri, md in rows:
        store.records[id_] = Record(key, Modality(modality), doc, uri, md)
        store.by_key[key] = id_
    if "index.usearch" in meta["files"] and spec.dimension:
        store.index = VectorIndex(spec.dimension, spec.space, spec.dtype)
        store.index.load(directory / "index.usearch")
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
