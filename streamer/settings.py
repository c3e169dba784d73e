"""The one settings object per process. Every field can be set from the environment with the
``STREAMER_`` prefix (``STREAMER_KAFKA_BOOTSTRAP``, ``STREAMER_BATCH_MAX_ITEMS``...); this is
the only module that reads the environment."""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

PREFIX = "STREAMER_"

#: Read once by glibc and by the OpenMP runtime at process start, so the CLI re-executes itself
#: with them (``with_runtime_env``). malloc: no page-fault storm from freeing and re-mapping
#: activation buffers on every batch; OpenMP: torch's idle threads sleep instead of spinning,
#: leaving the cores to image decoding and Kafka I/O between model calls (2-core box: Kafka
#: ingestion 0.88x -> 0.90x of the bare model, and the bare model itself faster).
RUNTIME_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000",
               "OMP_WAIT_POLICY": "PASSIVE"}


def with_runtime_env(*, force: bool = False) -> dict[str, str] | None:
    """The environment to re-execute this program with, or None when it is in place.
    Values the user set are kept unless ``force`` (benchmarks pin them)."""
    env = dict(os.environ)
    wanted = RUNTIME_ENV if force else {k: v for k, v in RUNTIME_ENV.items() if k not in env}
    if all(env.get(k) == v for k, v in wanted.items()):
        return None
    return {**env, **wanted}


@dataclass(frozen=True, kw_only=True)
class Settings:
    # storage
    data_dir: str | None = None
    fsync: bool = True
    checkpoint_every: int = 50_000
    # micro-batching
    batch_max_items: int = 64
    batch_max_wait_ms: float = 10.0
    # model
    model_threads: int | None = None
    # Where this process finds model weights: the Hugging Face hub cache for pretrained tags
    # (default: huggingface_hub's, from HF_HOME) and copies of spec-named weight files.
    model_cache: str | None = None
    # kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = "streamer"
    kafka_partitions: int = 4
    # 1 for the local single broker; compose/docker-compose.yml sets 3
    kafka_replication: int = 1
    kafka_request_timeout_s: float = 30.0
    kafka_group: str | None = None  # default: "<topic prefix>.writers"
    # Stable per process slot (not per pid): a restarted writer reuses its transactional id,
    # which fences its dead predecessor and aborts its open transaction at once.
    instance_id: str = "0"
    kafka_transaction_timeout_ms: int = 15_000
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    # upstream sources for `streamer serve`: mapping files, comma-separated (streamer/sources.py)
    sources: str | None = None
    # limits
    max_batch_records: int = 4096
    max_n_results: int = 10_000
    max_document_bytes: int = 1 << 20
    max_image_bytes: int = 32 << 20
    max_image_pixels: int = 40_000_000
    # Server-side confinement of every collection's data loader (os.pathsep-separated dirs):
    # a client's collection spec names its own roots, so it cannot be what the server trusts.
    data_roots: str | None = None
    # gateway
    http_host: str = "127.0.0.1"
    http_port: int = 8765
    auth_tokens: str | None = None
    ws_max_in_flight: int = 64  # requests per socket; more waits (TCP backpressure)
    ws_send_buffer_bytes: int = 8 << 20  # queued replies/pushes per socket before closing it
    ws_max_message_bytes: int = 16 << 20
    ws_max_subscriptions: int = 32
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(hints[f.name], raw)
        values.update(overrides)
        return cls(**values)


def _parse(tp: Any, raw: str) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        if raw == "" or raw.lower() == "none":
            return None
        tp = next(a for a in get_args(tp) if a is not type(None))
    if tp is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if tp in (int, float):
        return tp(raw)
    return raw
