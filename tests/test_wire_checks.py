"""The server checks each write event once, with code shaped for the one record it carries
(``wire_checks.check_write``); its verdicts equal Chroma's validation of the same record as a
one-element call (``prepare_write``), message for message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from consumers.validation.validate import prepare_write
from schemas.records import Op, WriteItem
from streamer.kafka.wire_checks import check_write
from streamer.settings import Settings

VEC = np.ones(4, dtype=np.float32)
IMG = np.zeros((8, 8, 3), dtype=np.uint8)
CASES = [
    {"document": "text"}, {"uri": "file:///a.png"}, {"image": IMG}, {"embedding": VEC},
    {"embedding": VEC, "document": "text"}, {"embedding": VEC, "image": IMG},
    {"document": "text", "uri": "u"}, {"document": "text", "image": IMG},
    {"image": IMG, "uri": "u"}, {}, {"metadata": {"a": 1}},
    {"document": "t", "metadata": {"nested": {"x": 1}}},
    {"document": "t", "metadata": {"chroma:document": "x"}},
    {"document": "t", "metadata": {"l": []}}, {"document": "t", "metadata": {}},
    {"embedding": VEC, "metadata": {"ok": [1, 2]}},
]


def _outcome(fn: Any) -> tuple[str, str]:
    try:
        fn()
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", ""


@pytest.mark.parametrize("op", [Op.ADD, Op.UPDATE, Op.UPSERT])
@pytest.mark.parametrize("fields", CASES, ids=lambda f: "+".join(f) or "nothing")
def test_single_event_check_agrees_with_chroma_validation(op: Op, fields: dict[str, Any]) -> None:
    item = WriteItem(id="r1", **fields)

    def one(name: str) -> list[Any] | None:
        return None if fields.get(name) is None else [fields[name]]

    want = _outcome(lambda: prepare_write(
        op, ids=[item.id], embeddings=one("embedding"), metadatas=one("metadata"),
        documents=one("document"), images=one("image"), uris=one("uri"),
        has_loader=True, has_embedding_function=True))
    got = _outcome(lambda: check_write(op, item, Settings(), has_embedding_function=True,
                                       has_loader=True))
    assert got == want


def test_what_the_collection_cannot_embed_is_refused() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="data loader"):
        check_write(Op.ADD, WriteItem(id="a", uri="u"), settings, has_embedding_function=True,
                    has_loader=False)
    with pytest.raises(ValueError, match="embedding function"):
        check_write(Op.ADD, WriteItem(id="a", document="d"), settings,
                    has_embedding_function=False, has_loader=True)
    check_write(Op.UPDATE, WriteItem(id="a", metadata={"k": 1}), settings,
                has_embedding_function=False, has_loader=False)
