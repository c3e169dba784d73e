"""The one settings object per process. Every field can be set from the environment with the
``STREAMER_`` prefix (``STREAMER_KAFKA_BOOTSTRAP``, ``STREAMER_BATCH_MAX_ITEMS``...); this is
the only module that reads the environment."""

from __future__ import annotations

import os
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

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


class Settings(BaseSettings):
    """Every field reads ``STREAMER_<FIELD>`` (pydantic-settings: typed parsing, errors that
    name the variable); keyword arguments win over the environment."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid",
                                      env_ignore_empty=True, env_parse_none_str="none")

    # storage
    data_dir: str | None = None
    fsync: bool = True
    checkpoint_every: int = 50_000
    # micro-batching
    batch_max_items: int = 64
    batch_max_wait_ms: float = 10.0
    # A batch of records that need no model (they carry their embeddings) grows past
    # batch_max_items up to this: fewer transactions and replica applies per record.
    batch_max_records: int = 512
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
    # "K/N": serve only shard K of N (state partitions p with p % N == K); see kafka/shards.py
    shard: str | None = None
    # The writers' group: a writer silent this long loses its partitions (and, through its
    # per-partition transactional ids, any right to commit for them: kafka/producers.py).
    kafka_session_timeout_ms: int = 10_000
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    # Producer compression: zstd takes back most of base64's third on image payloads, which
    # lz4 (no entropy coding) cannot; "none" turns it off.
    kafka_compression: str = "zstd"
    # upstream sources for `streamer serve`: mapping files, comma-separated (streamer/sources.py)
    sources: str | None = None
    # limits
    # Chroma's max batch size (client.get_max_batch_size(); 5461 in chromadb 1.5 locally)
    max_batch_records: int = 5461
    max_n_results: int = 10_000
    max_document_bytes: int = 1 << 20
    # One image as sent: an encoded file or a (compressed) pixel array; 40 MiB holds even an
    # uncompressed 12-megapixel RGB array (36.6 MB). Decoded pixels are bounded by pixels.
    max_image_bytes: int = 40 << 20
    max_image_pixels: int = 40_000_000
    # Server-side confinement of every collection's data loader (os.pathsep-separated dirs):
    # a client's collection spec names its own roots, so it cannot be what the server trusts.
    data_roots: str | None = None
    # Remote URIs (consumers/remote.py): off until this lists allowed prefixes, comma-separated
    # ("s3://catalog/,https://img.example.com/p/"); specs can only narrow it. Store options
    # as JSON per scheme ({"s3": {"endpoint": ..., "region": ...}}), never credentials (those
    # come from AWS_*, AZURE_STORAGE_*, GOOGLE_* and profiles); non-public networks http(s)
    # may reach, comma-separated CIDRs (none by default).
    remote_allow: str | None = None
    remote_stores: dict[str, dict[str, str]] | None = None
    remote_allow_networks: str | None = None
    remote_timeout_s: float = 30.0
    remote_retries: int = 3
    remote_max_in_flight: int = 64  # per process, all collections together
    # gateway
    http_host: str = "127.0.0.1"
    http_port: int = 8765
    auth_tokens: str | None = None
    # Chroma's HTTP API v2 (/api/v2, gateway/chroma_http.py): the grant ("r", "w" or "rw", every
    # collection) of a request that carries no token, for chromadb.HttpClient(host, port) as it
    # is; off by default (a request without a token is refused). allow_reset: POST /api/v2/reset
    # deletes every collection (Chroma's ALLOW_RESET; refused with Chroma's error otherwise).
    http_anonymous: str | None = None
    allow_reset: bool = False
    ws_max_in_flight: int = 64  # requests per socket; more waits (TCP backpressure)
    ws_send_buffer_bytes: int = 8 << 20  # queued replies/pushes per socket before closing it
    ws_max_message_bytes: int = 16 << 20  # raised to max_message_bytes: a frame holds an event
    ws_max_subscriptions: int = 32
    # A live query resuming after a reconnect replays at most this many logged mutations.
    ws_resume_max_records: int = 10_000
    log_level: str = "INFO"

    @property
    def max_message_bytes(self) -> int:
        """The largest event the limits admit, which sizes the topics (``max.message.bytes``),
        the producers, the consumers' fetches and the websocket frames: one image in base64,
        a document (JSON escaping can double it) and 1 MiB for ids, metadata and envelope."""
        return self.max_image_bytes * 4 // 3 + 2 * self.max_document_bytes + (1 << 20)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """The environment's settings with ``overrides`` on top."""
        return cls(**overrides)
