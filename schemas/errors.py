"""The typed error tree. Every error has a stable ``code`` and a ``retriable`` flag so that
it can cross the wire (Kafka reply or websocket frame) and be rebuilt client-side as the
same exception class. Validation errors subclass ``ValueError``/``TypeError`` like Chroma's,
so ``except ValueError`` in Chroma code keeps working."""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "CorruptionError",
    "DataLoaderError",
    "DimensionMismatchError",
    "DuplicateIDError",
    "EmbeddingError",
    "FetchError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "LimitExceededError",
    "NotFoundError",
    "PermissionDeniedError",
    "RequestTimeoutError",
    "ResumeExpiredError",
    "SchemaError",
    "ShardUnavailableError",
    "StreamerError",
    "URINotAllowedError",
    "URIOutsideRootsError",
    "UnavailableError",
    "UniqueConstraintError",
    "WeightsError",
    "WeightsMismatchError",
    "WeightsNotFoundError",
    "error_from_wire",
    "error_to_wire",
]

_REGISTRY: dict[str, type[StreamerError]] = {}


class StreamerError(Exception):
    """Base of every error the store raises on purpose."""

    code: ClassVar[str] = "internal"
    retriable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("code") is not None:
            _REGISTRY[cls.code] = cls

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    @classmethod
    def name(cls) -> str:
        return cls.__name__


class InvalidArgumentError(StreamerError, ValueError):
    code = "invalid_argument"


class InvalidTypeError(StreamerError, TypeError):
    """Chroma raises ``TypeError`` for a few arguments (``n_results`` <= 0)."""

    code = "invalid_type"


class DuplicateIDError(InvalidArgumentError):
    code = "duplicate_id"


class DimensionMismatchError(InvalidArgumentError):
    code = "dimension_mismatch"


class SchemaError(InvalidArgumentError):
    """A wire event that is not JSON, has an unknown op or a wrong schema version."""

    code = "schema"


class LimitExceededError(InvalidArgumentError):
    code = "limit_exceeded"


class NotFoundError(StreamerError, ValueError):
    code = "not_found"


class UniqueConstraintError(StreamerError, ValueError):
    code = "already_exists"


class PermissionDeniedError(StreamerError, PermissionError):
    """The caller's token may not read or write this collection."""

    code = "permission_denied"


class DataLoaderError(StreamerError, ValueError):
    code = "data_loader"


class URIOutsideRootsError(DataLoaderError, PermissionError):
    code = "uri_outside_roots"


class URINotAllowedError(DataLoaderError, PermissionError):
    """A remote URI outside the loader's allowed prefixes or schemes, or an http(s) host that
    resolves to a loopback, private, link-local or metadata-service address."""

    code = "uri_not_allowed"


class FetchError(DataLoaderError):
    """A remote read failed: not found, denied, timed out, or the server kept failing."""

    code = "fetch_failed"


class EmbeddingError(StreamerError):
    code = "embedding"


class WeightsError(EmbeddingError):
    """A model's weights cannot be resolved: an unknown pretrained tag, a missing file."""

    code = "weights"


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """Pretrained weights that are neither cached nor downloadable (offline); the message
    names the tag, the Hugging Face repository and the file to place where."""

    code = "weights_not_found"


class WeightsMismatchError(WeightsError):
    """The weights this process resolved differ from those the collection's spec records."""

    code = "weights_mismatch"


class UnavailableError(StreamerError):
    """The broker or a service process is unreachable; the same request may succeed later."""

    code = "unavailable"
    retriable = True


class ShardUnavailableError(UnavailableError):
    """A shard of a sharded deployment has no live replica: no exact answer can be given."""

    code = "shard_unavailable"


class RequestTimeoutError(StreamerError, TimeoutError):
    code = "timeout"
    retriable = True


class ResumeExpiredError(StreamerError):
    """A live query asked to resume after a sequence this server no longer keeps (or from
    another server's sequence space): matches may have been missed, so subscribe afresh."""

    code = "resume_expired"


class CorruptionError(StreamerError):
    """A log frame or checkpoint failed its checksum."""

    code = "corruption"


class InternalError(StreamerError):
    code = "internal"


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """The reply payload for an exception; unknown exceptions become ``internal``."""
    if isinstance(exc, StreamerError):
        return {"code": exc.code, "name": exc.name(), "message": exc.message,
                "retriable": exc.retriable}
    return {"code": InternalError.code, "name": type(exc).__name__, "message": str(exc),
            "retriable": False}


def error_from_wire(payload: dict[str, Any]) -> StreamerError:
    """Rebuild the exception a server sent; an unknown code degrades to ``InternalError``."""
    cls = _REGISTRY.get(str(payload.get("code")), InternalError)
    return cls(str(payload.get("message", "")))
