"""The generated reference pages (docs/reference/) are current: each is regenerated from
the ``Settings`` object and ``schemas/generated/`` and compared with the committed file, as
tests/test_contracts.py does for the schemas."""

from __future__ import annotations

import re
import typing

from schemas.contracts import GENERATED
from streamer import reference
from streamer.settings import PREFIX, Settings
from streamer.testing.kafka import ROOT


def test_committed_reference_pages_are_current() -> None:
    for path, text in reference.render().items():
        committed = ROOT / path
        assert committed.exists(), f"{path} is missing: run {reference.COMMAND}"
        assert committed.read_text() == text, f"{path} is stale: run {reference.COMMAND}"


def test_every_setting_has_a_description_and_a_row() -> None:
    page = reference.configuration()
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} needs Field(description=...)"
        assert f"`{PREFIX}{name.upper()}`" in page


def test_every_generated_schema_and_error_code_is_on_the_wire_page() -> None:
    page = reference.wire()
    for path in sorted(GENERATED.glob("*.schema.json")):
        assert f"`schemas/generated/{path.name}`" in page
    assert "`resume_expired`" in page and "`{prefix}.requests`" in page


def test_type_names_never_split_a_table_cell() -> None:
    assert reference._type_name(int) == "int"
    assert reference._type_name(str | None) == "str"
    assert reference._type_name(typing.Optional[dict[str, dict[str, str]]]) == "dict[str, dict[str, str]]"  # noqa: UP045
    rows = [line for line in reference.configuration().splitlines() if line.startswith("| `")]
    assert len(rows) == len(Settings.model_fields)
    for row in rows:  # four cells: five pipes that are not escaped
        assert len(re.findall(r"(?<!\\)\|", row)) == 5, row
