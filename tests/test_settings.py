"""Settings read ``STREAMER_<FIELD>`` from the environment (pydantic-settings), typed, with
keyword overrides winning and bad values refused with the variable's name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamer.settings import Settings


def test_environment_fills_every_kind_of_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_KAFKA_BOOTSTRAP", "broker:9093")
    monkeypatch.setenv("STREAMER_BATCH_MAX_ITEMS", "7")
    monkeypatch.setenv("STREAMER_BATCH_MAX_WAIT_MS", "2.5")
    monkeypatch.setenv("STREAMER_FSYNC", "false")
    monkeypatch.setenv("STREAMER_MODEL_THREADS", "")  # empty: the default
    monkeypatch.setenv("STREAMER_KAFKA_GROUP", "none")
    s = Settings.from_env(kafka_topic_prefix="override")
    assert (s.kafka_bootstrap, s.batch_max_items, s.batch_max_wait_ms, s.fsync) == \
        ("broker:9093", 7, 2.5, False)
    assert s.model_threads is None and s.kafka_group is None
    assert s.kafka_topic_prefix == "override"
    assert Settings.from_env(kafka_bootstrap="x:1").kafka_bootstrap == "x:1"


def test_bad_values_and_unknown_fields_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_KAFKA_PARTITIONS", "four")
    with pytest.raises(ValidationError, match="kafka_partitions"):
        Settings.from_env()
    monkeypatch.delenv("STREAMER_KAFKA_PARTITIONS")
    with pytest.raises(ValidationError):
        Settings.from_env(no_such_field=1)
    with pytest.raises(ValidationError):  # one settings object per process, never mutated
        Settings.from_env().kafka_partitions = 2
