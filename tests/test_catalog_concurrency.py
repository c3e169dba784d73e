"""The catalog is read on the event loop (list_collections, lookups by id, admin rules)
while the Kafka replica installs, renames and deletes specs on a worker thread. Readers see
whole snapshots: never a table changing under an iteration, never a half-applied change."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.storage.catalog import Catalog
from schemas.records import CollectionSpec


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so the writer lands mid-iteration."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_list_collections_during_spec_changes(tmp_path: Path, fast_switching: None) -> None:
    catalog = Catalog(None)
    stable = [CollectionSpec(id=str(uuid.uuid4()), name=f"stable{i:03d}") for i in range(200)]
    for spec in stable:
        catalog.install(spec)
    stop = threading.Event()
    changes = 0
    failure: list[BaseException] = []

    def replica() -> None:  # what Replica._apply_specs does, as fast as it can
        nonlocal changes
        try:
            while not stop.is_set():
                spec = CollectionSpec(id=str(uuid.uuid4()), name=f"churn{changes % 7}")
                catalog.install(spec)
                catalog.install(CollectionSpec(id=spec.id, name=f"renamed{changes % 7}",
                                               metadata={"n": changes}))
                catalog.delete(f"renamed{changes % 7}")
                changes += 1
        except BaseException as exc:
            failure.append(exc)

    writer = threading.Thread(target=replica)
    writer.start()
    try:
        reads = 0
        while changes < 300 or reads < 2000:
            table = catalog.collections
            names = [state.spec.name for state in table.values()]
            specs = catalog.specs()
            assert set(s.name for s in stable) <= set(names)
            assert set(s.name for s in stable) <= set(specs)
            assert len(names) == len(table)  # the snapshot did not change under the loop
            assert all(catalog.by_id(s.id) is not None for s in stable[:5])
            reads += 1
    finally:
        stop.set()
        writer.join()
    assert not failure, failure
    assert [n for n in catalog.collections if not n.startswith("stable")] == []
