"""The one settings object per process. Every field can be set from the environment with the
``STREAMER_`` prefix (``STREAMER_KAFKA_BOOTSTRAP``, ``STREAMER_BATCH_MAX_ITEMS``...); this is
the only module that reads the environment."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, SecretStr
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
    data_dir: str | None = Field(default=None, description=(
        "Directory of the local store (embedded engine, or the service's replica: log, "
        "checkpoints); none keeps it in memory."))
    fsync: bool = Field(default=True, description="fsync the log after every batch commit.")
    checkpoint_every: int = Field(default=50_000, description=(
        "Records applied between two checkpoints (record table + index), which bound recovery."))
    # micro-batching
    batch_max_items: int = Field(default=64, description=(
        "Records per batch fetched by the Kafka writer and by upstream sources."))
    batch_max_wait_ms: float = Field(default=10.0, description=(
        "How long a batch waits to fill before it is processed anyway."))
    batch_max_records: int = Field(default=512, description=(
        "A batch whose records all carry their embeddings (no model needed) grows past "
        "batch_max_items up to this, from what is already fetched: fewer transactions and "
        "replica applies per record."))
    # model
    model_threads: int | None = Field(default=None, description=(
        "Threads for the model; read by nothing yet (torch picks its own count)."))
    model_cache: str | None = Field(default=None, description=(
        "Where this process finds model weights: the Hugging Face hub cache for pretrained "
        "tags (default: huggingface_hub's, from HF_HOME) and copies of spec-named weight files."))
    # kafka
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_topic_prefix: str = Field(default="streamer", description=(
        "Prefix of every topic and group (<prefix>.requests, .state, .queries, .replies, "
        ".collections, .dlq, .shards)."))
    kafka_partitions: int = Field(default=4, description=(
        "Partitions of the requests and state topics when streamer creates them."))
    kafka_replication: int = Field(default=1, description=(
        "Replication factor of the topics streamer creates: 1 for the local single broker; "
        "compose/docker-compose.yml sets 3."))
    kafka_request_timeout_s: float = Field(default=30.0, description=(
        "One time budget per client call (a read, sending included; a write, per attempt); "
        "past it the call raises a retriable RequestTimeoutError."))
    kafka_group: str | None = Field(default=None, description=(
        "The writers' consumer group; none means '<topic prefix>.writers'."))
    instance_id: str = Field(default="0", description=(
        "Stable per process slot (not per pid): a restarted writer reuses its transactional "
        "ids, which fences its dead predecessor and aborts its open transaction at once."))
    kafka_transaction_timeout_ms: int = Field(default=15_000, description=(
        "Transaction timeout of the writers' transactional producers."))
    shard: str | None = Field(default=None, description=(
        "'K/N': serve only shard K of N (state partitions p with p % N == K); none serves "
        "every partition (streamer/kafka/shards.py)."))
    shard_partial_results: bool = Field(default=False, description=(
        "A caller's setting for a sharded deployment: a query or get with a shard down "
        "answers from the shards that are up, marked 'partial': true with 'missing_shards', "
        "instead of raising ShardUnavailableError (count and sync never answer in part)."))
    kafka_session_timeout_ms: int = Field(default=10_000, description=(
        "Session timeout of the writers' group: a writer silent this long loses its "
        "partitions and, through its per-partition transactional ids, any right to commit for "
        "them (streamer/kafka/producers.py)."))
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description=(
            "Security protocol of every Kafka client of the process (service, clients, CLI, "
            "benchmarks); managed clusters want SASL_SSL or SSL (docs/managed-kafka.md)."))
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = \
        Field(default=None, description="SASL mechanism, with a SASL_* security protocol.")
    kafka_sasl_username: str | None = Field(default=None, description=(
        "SASL user name (PLAIN, SCRAM)."))
    kafka_sasl_password: SecretStr | None = Field(default=None, description=(
        "SASL password (PLAIN, SCRAM); shown in no log, error or metric."))
    kafka_sasl_oauth_token_file: str | None = Field(default=None, description=(
        "OAUTHBEARER: a file holding the token (a JWT), read again when it changes and when "
        "the token it held expires."))
    kafka_sasl_oauth_token_provider: str | None = Field(default=None, description=(
        "OAUTHBEARER: 'module:function' returning a token (sync functions run on a thread), "
        "called for each new connection; 'msk-iam' for AWS MSK IAM (extra streamer[msk-iam])."))
    kafka_aws_region: str | None = Field(default=None, description=(
        "AWS region of an MSK cluster, for msk-iam tokens."))
    kafka_ssl_cafile: str | None = Field(default=None, description=(
        "PEM file of the CAs that sign the brokers' certificates; none trusts the system's."))
    kafka_ssl_certfile: str | None = Field(default=None, description=(
        "PEM client certificate (chain) for mutual TLS."))
    kafka_ssl_keyfile: str | None = Field(default=None, description=(
        "PEM private key of the client certificate (none: it is in the certificate file)."))
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description=(
        "Password of an encrypted client key."))
    kafka_ssl_check_hostname: bool = Field(default=True, description=(
        "Verify that a broker's certificate names the host connected to."))
    kafka_compression: str = Field(default="zstd", description=(
        "Producer compression: zstd takes back most of base64's third on image payloads, "
        "which lz4 (no entropy coding) cannot; 'none' turns it off."))
    sources: str | None = Field(default=None, description=(
        "Upstream source mappings for `streamer serve`, comma-separated files "
        "(compose/sources/)."))
    # limits
    max_batch_records: int = Field(default=5461, description=(
        "Records per add/update/upsert call: Chroma's max batch size "
        "(client.get_max_batch_size(); 5461 in chromadb 1.5 locally)."))
    max_n_results: int = Field(default=10_000, description="Largest n_results of a query.")
    max_document_bytes: int = Field(default=1 << 20, description="Largest document, in UTF-8 bytes.")
    max_image_bytes: int = Field(default=40 << 20, description=(
        "One image as sent: an encoded file or a (compressed) pixel array; 40 MiB holds even "
        "an uncompressed 12-megapixel RGB array (36.6 MB). Also caps remote reads."))
    max_image_pixels: int = Field(default=40_000_000, description=(
        "Largest image in pixels, checked from the array or file header before decoding."))
    data_roots: str | None = Field(default=None, description=(
        "Server-side confinement of every collection's data loader (os.pathsep-separated "
        "directories): a client's collection spec names its own roots, so it cannot be what "
        "the server trusts."))
    remote_allow: str | None = Field(default=None, description=(
        "Remote URI prefixes loaders may read, comma-separated "
        "('s3://catalog/,https://img.example.com/p/'); none: remote URIs are off whatever a "
        "spec asks, and a spec can only narrow this."))
    remote_stores: dict[str, dict[str, str]] | None = Field(default=None, description=(
        "Object-store options as JSON per scheme ({\"s3\": {\"endpoint\": ..., \"region\": "
        "...}}), replacing a spec's; never credentials (those come from AWS_*, "
        "AZURE_STORAGE_*, GOOGLE_* and ambient identity)."))
    remote_allow_networks: str | None = Field(default=None, description=(
        "Non-public networks http(s) may reach, comma-separated CIDRs (none by default)."))
    remote_timeout_s: float = Field(default=30.0, description="Timeout of every remote request.")
    remote_retries: int = Field(default=3, description=(
        "Retries of a remote read on timeouts, connection errors, 5xx, 408 and 429."))
    remote_max_in_flight: int = Field(default=64, description=(
        "Remote requests in flight per process, all collections together."))
    # gateway
    http_host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    http_port: int = Field(default=8765, description=(
        "Port of the gateway (websocket /ws, search page, /healthz, /readyz, /metrics); 0 "
        "picks a free port."))
    auth_tokens: str | None = Field(default=None, description=(
        "Bearer tokens of the gateway: 'token:mode:collections' entries separated by ';', "
        "mode r, w or rw, collections * or a comma-separated list; none refuses every request."))
    http_anonymous: str | None = Field(default=None, description=(
        "Chroma's HTTP API v2: the grant (r, w or rw, every collection) of a request that "
        "carries no token, for chromadb.HttpClient(host, port) as it is; none refuses such "
        "requests."))
    http_max_body_bytes: int = Field(default=40 << 20, gt=0, description=(
        "The largest request body Chroma's HTTP API reads: 40 MiB, chroma run's own limit; "
        "a larger one is 413 'Payload too large', as from chroma run."))
    allow_reset: bool = Field(default=False, description=(
        "Chroma's ALLOW_RESET: POST /api/v2/reset deletes every collection; refused with "
        "Chroma's error otherwise."))
    http_tls_certfile: str | None = Field(default=None, description=(
        "PEM certificate (chain) of the gateway: with http_tls_keyfile it serves https and "
        "wss only."))
    http_tls_keyfile: str | None = Field(default=None, description=(
        "PEM private key of http_tls_certfile."))
    ops_token: SecretStr | None = Field(default=None, description=(
        "When set, /metrics and /healthz answer only requests with 'Authorization: Bearer "
        "<ops_token>' (401 otherwise); /readyz stays open for load balancers."))
    ws_max_in_flight: int = Field(default=64, description=(
        "Requests in flight per socket; more waits (TCP backpressure)."))
    ws_send_buffer_bytes: int = Field(default=8 << 20, description=(
        "Queued replies and pushes per socket before the gateway closes it (4008)."))
    ws_max_message_bytes: int = Field(default=16 << 20, description=(
        "Largest websocket frame; raised to the largest event the limits admit, so a frame "
        "holds an event."))
    ws_max_subscriptions: int = Field(default=32, description="Live queries per socket.")
    ws_resume_max_records: int = Field(default=10_000, description=(
        "A live query resuming after a reconnect replays at most this many logged mutations; "
        "past it the resume is refused (resume_expired)."))
    log_level: str = Field(default="INFO", description="Log level of `streamer serve`.")

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
