"""OpenTelemetry traces across the hops of a request: the client's call, the requests topic,
the writer's stages (load, embed, resolve, transaction), the state topic, the replica's apply,
and the reply (Kafka), the websocket answer or a live query's push; an upstream source's
record starts (or continues) a trace too. W3C trace context travels in Kafka headers
(``traceparent``, ``tracestate``), in HTTP headers, and in a websocket frame's ``traceparent``.

Off until a tracer provider is installed: by ``configure()`` from the standard ``OTEL_*``
variables (``streamer serve`` and the CLI call it), or by the application itself. Off, each
hook is one ``enabled()`` check: no header is written or parsed and no span is made.

A writer batch carries many requests, each in its own trace. Every traced call gets its own
span per stage, timed as the batch's stage ran and linked to one ``writer batch`` span, which
links back to every call it carried (OpenTelemetry's pattern for batch processing)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NoOpTracerProvider, ProxyTracerProvider, Span, SpanKind

TRACER = trace.get_tracer("streamer")
Headers = list[tuple[str, bytes]]
_FIELDS = ("traceparent", "tracestate")


def enabled() -> bool:
    """Whether a real tracer provider is installed (the API's default is a no-op proxy)."""
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider)


def configure() -> bool:
    """Install an SDK tracer provider when the standard variables ask for traces: an OTLP
    endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``..._TRACES_ENDPOINT``) or an explicit
    ``OTEL_TRACES_EXPORTER`` (otlp, console), unless ``OTEL_SDK_DISABLED=true``. The SDK reads
    the rest itself: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, the sampler, the
    batch processor, the exporter's headers, certificates and protocol. Returns whether
    tracing is on; the SDK is the ``tracing`` extra."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or enabled():
        return enabled()
    names = env.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT")
        names = "otlp" if endpoint else "none"
    exporters = [n.strip() for n in names.split(",") if n.strip() not in ("", "none")]
    if not exporters:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # "streamer" unless the variables name the service (attributes given here would win).
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {SERVICE_NAME: "streamer"}))
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    return True


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console, none)")
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter()
    if protocol == "http/protobuf":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )
        except ImportError as exc:
            raise ValueError("OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf needs the "
                             "opentelemetry-exporter-otlp-proto-http package") from exc
        return HttpExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unknown protocol {protocol!r} "
                     "(grpc, http/protobuf)")


def shutdown() -> None:
    """Flush and stop the installed provider (a process's last spans are exported)."""
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if enabled() and stop is not None:
        stop()


def inject(headers: Headers) -> Headers:
    """``headers`` with the current span's context appended, when tracing is on."""
    if enabled():
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        headers.extend((k, v.encode()) for k, v in carrier.items())
    return headers


def extract(headers: Sequence[tuple[str, bytes]] | None) -> Context | None:
    """The trace context a record's headers carry; None without one or with tracing off."""
    if not headers or not enabled():
        return None
    carrier = {k: bytes(v).decode("latin-1") for k, v in headers if k in _FIELDS}
    return propagate.extract(carrier) if "traceparent" in carrier else None


def extract_text(traceparent: Any) -> Context | None:
    """The context of a ``traceparent`` string (a websocket frame's field)."""
    if not isinstance(traceparent, str) or not enabled():
        return None
    return propagate.extract({"traceparent": traceparent})


@contextlib.contextmanager
def span(name: str, *, parent: Context | None = None,
         kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span | None]:
    """A span made current for the block, or nothing at all when tracing is off."""
    if not enabled():
        yield None
        return
    with TRACER.start_as_current_span(name, context=parent, kind=kind) as current:
        yield current


def identity(ctx: Context) -> tuple[int, int]:
    """The trace and span id a context continues: the records of one call share them."""
    sc = trace.get_current_span(ctx).get_span_context()
    return sc.trace_id, sc.span_id


def start(name: str, parents: Iterable[Context | None] = (), *,
          kind: SpanKind = SpanKind.INTERNAL) -> Span | None:
    """A span started, not made current, for work that ends elsewhere: the child of the first
    of ``parents`` (a new trace without one) and linked to the others, as one push for many
    writes is. None when tracing is off."""
    if not enabled():
        return None
    given = list({identity(c): c for c in parents if c is not None}.values())
    links = [Link(trace.get_current_span(c).get_span_context()) for c in given[1:]]
    return TRACER.start_span(name, context=given[0] if given else Context(), links=links,
                             kind=kind)


class BatchTrace:
    """The traced records of one writer batch, keyed ``(partition, offset)``, and when each
    stage ran (wall-clock nanoseconds, as spans take them). A client's call sends its records
    under one span: each stage is one span per call (per partition for the transaction), not
    one per record."""

    def __init__(self, parents: dict[tuple[int, int], Context]) -> None:
        self.parents = parents
        self.stages: list[tuple[str, int, int]] = []
        self._batch: Span | None = None
        self._staged: set[tuple[int, int]] = set()
        self._transactions: dict[tuple[int, int, int], Span] = {}

    @classmethod
    def of(cls, records: Iterable[Any]) -> BatchTrace | None:
        """None when tracing is off or no record carries a context: nothing to do later."""
        if not enabled():
            return None
        parents = {(r.partition, r.offset): ctx for r in records
                   if (ctx := extract(r.headers)) is not None}
        return cls(parents) if parents else None

    def merge(self, other: BatchTrace | None) -> BatchTrace:
        if other is not None:
            self.parents.update(other.parents)
            self.stages += other.stages
        return self

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.time_ns()
        try:
            yield
        finally:
            self.stages.append((name, start, time.time_ns()))

    def _batch_span(self) -> Span:
        if self._batch is None:
            distinct = {identity(ctx): ctx for ctx in self.parents.values()}
            links = [Link(trace.get_current_span(ctx).get_span_context())
                     for ctx in distinct.values()]
            start = min((s for _, s, _ in self.stages), default=time.time_ns())
            self._batch = TRACER.start_span("writer batch", context=Context(), links=links,
                                            start_time=start,
                                            attributes={"messaging.batch.message_count":
                                                        len(self.parents)})
        return self._batch

    def stages_of(self, partition: int, offset: int) -> Span | None:
        """The ``writer transaction`` span (started, not ended) of one traced record on its
        partition, a child of the record's context, with the finished stages emitted beside
        it the first time that context is seen; None for an untraced record."""
        parent = self.parents.get((partition, offset))
        if parent is None:
            return None
        ident = identity(parent)
        open_ = self._transactions.get((*ident, partition))
        if open_ is not None:
            return open_
        link = [Link(self._batch_span().get_span_context())]
        if ident not in self._staged:
            self._staged.add(ident)
            for name, start, end in self.stages:
                TRACER.start_span(name, context=parent, links=link, start_time=start).end(end)
        open_ = self._transactions[(*ident, partition)] = TRACER.start_span(
            "writer transaction", context=parent, links=link, kind=SpanKind.PRODUCER)
        return open_

    def end(self) -> None:
        if self._batch is not None:
            self._batch.end()


def headers_of(span_: Span | None) -> Headers:
    """The headers that carry ``span_``'s context (to the state topic, a reply)."""
    if span_ is None:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span_))
    return [(k, v.encode()) for k, v in carrier.items()]


__all__ = ["BatchTrace", "configure", "enabled", "extract", "extract_text", "headers_of",
           "identity", "inject", "shutdown", "span", "start"]
