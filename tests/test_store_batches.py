"""A replica applies many transactions as one batch: an id's later put without a vector (an
update that keeps it) must keep the vector an earlier put of the same batch set."""

from __future__ import annotations

import numpy as np

from consumers.storage.store import CollectionStore
from schemas.records import CollectionSpec, Modality, Mutation


def test_a_vectorless_put_keeps_the_vector_of_an_earlier_put_in_the_same_batch() -> None:
    store = CollectionStore(CollectionSpec(id="c", name="batches"))
    old = np.ones(4, np.float32)
    store.apply([Mutation("put", "x", Modality.EMBEDDING, metadata={"v": 0}, vector=old)], 1, {})
    new = np.arange(4, dtype=np.float32)
    # One poll: the id is deleted, added again with a new vector, then its metadata updated;
    # and a brand-new id is added then updated.
    store.apply([Mutation("delete", "x"),
                 Mutation("put", "x", Modality.TEXT, document="d", vector=new),
                 Mutation("put", "x", Modality.TEXT, document="d", metadata={"v": 2}),
                 Mutation("put", "y", Modality.TEXT, document="e", vector=new * 2),
                 Mutation("put", "y", Modality.TEXT, document="e", metadata={"v": 3})], 6, {})
    np.testing.assert_array_equal(store.vectors(["x", "y"]), np.stack([new, new * 2]))
    assert store.records["x"].metadata == {"v": 2} and store.records["y"].metadata == {"v": 3}
