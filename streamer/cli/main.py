"""streamer: multimodal collections (texts, images, URIs) from the command line.

  streamer ingest PATH|GLOB -c NAME   add a folder of images and texts (resumable)
  streamer query "text" -c NAME       nearest records, as a table (--html for thumbnails)
  streamer collections                list collections
  streamer stats NAME                 describe one collection
  streamer serve [--source FILE]      run the Kafka service (and upstream sources)
  streamer demo                       index generated images and search them, in seconds

Commands work on an embedded store (--path DIR) or a running service (--kafka BOOTSTRAP).
Exit codes: 0 ok, 1 runtime error (or an ingest with failed files), 2 usage error."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback

from schemas.errors import InvalidArgumentError
from streamer import tracing
from streamer.cli import ingest as cli_ingest
from streamer.cli import query as cli_query
from streamer.cli.common import UsageError
from streamer.settings import Settings, with_runtime_env


def _serve(args: argparse.Namespace) -> int:
    from streamer.kafka.sources import load_mapping, source_files
    from streamer.server import serve

    overrides = {}
    if args.kafka:
        overrides["kafka_bootstrap"] = args.kafka
    if args.prefix:
        overrides["kafka_topic_prefix"] = args.prefix
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.http_port is not None:
        overrides["http_port"] = args.http_port
    if args.source:
        if any("," in f for f in args.source):
            raise UsageError("--source: a file name may not contain ','")
        overrides["sources"] = ",".join(args.source)
    if args.shard:
        overrides["shard"] = args.shard
    settings = Settings.from_env(**overrides)
    if settings.shard is not None:
        from streamer.kafka.shards import Shard

        try:
            Shard.parse(settings.shard)
        except InvalidArgumentError as exc:
            raise UsageError(str(exc)) from None
    if args.embedded and source_files(settings):
        raise UsageError("upstream sources need Kafka: drop --embedded or the sources")
    for f in source_files(settings):
        try:
            load_mapping(f)  # a bad mapping is a usage error, before anything starts
        except InvalidArgumentError as exc:
            raise UsageError(str(exc)) from None
    logging.basicConfig(level=settings.log_level,
                        format='{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    if args.embedded:
        from streamer.server import serve_embedded

        asyncio.run(serve_embedded(settings))
        return 0
    asyncio.run(serve(settings, role=args.role))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from streamer.cli.demo import run_demo

    if args.n < 1:
        raise UsageError("-n must be at least 1")
    return run_demo(n=args.n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_ingest.add_parser(sub)
    cli_query.add_parsers(sub)
    p = sub.add_parser("serve", help="run the Kafka service (writer, replica, reader, sources)",
                       description="Run the Kafka service until SIGTERM/SIGINT.")
    p.add_argument("--kafka", metavar="BOOTSTRAP",
                   help="bootstrap servers (default: STREAMER_KAFKA_BOOTSTRAP)")
    p.add_argument("--prefix", metavar="PREFIX",
                   help="topic prefix (default: STREAMER_KAFKA_TOPIC_PREFIX or 'streamer')")
    p.add_argument("--data-dir", metavar="DIR", help="local replica directory (default: in memory)")
    p.add_argument("--http-port", type=int, metavar="PORT",
                   help="gateway port: Chroma's HTTP API /api/v2 (docs/http-api.md), websocket "
                        "/ws, search page, /healthz, /readyz, /metrics (default: "
                        "STREAMER_HTTP_PORT or 8765; 0 picks a free port)")
    p.add_argument("--embedded", action="store_true",
                   help="no Kafka: serve the gateway over the in-process engine (--data-dir)")
    p.add_argument("--source", action="append", metavar="FILE",
                   help="an upstream source mapping (.toml/.json, see compose/sources/); "
                        "repeatable (default: STREAMER_SOURCES)")
    p.add_argument("--shard", metavar="K/N",
                   help="serve shard K of N: state partitions p with p %% N == K "
                        "(default: STREAMER_SHARD; none: every partition)")
    p.add_argument("--role", choices=("all", "writer", "reader"), default="all",
                   help="all: ingest and answer queries; writer: only ingest; reader: only "
                        "answer queries, so queries never wait behind ingestion (default: all)")
    p.set_defaults(func=_serve)
    p = sub.add_parser("demo", help="embedded demo: index generated images, search by text",
                       description="Generate shape images, index them with the built-in model "
                                   "and search them by text, in a temporary folder.")
    p.add_argument("-n", type=int, default=48, metavar="N", help="number of images (default: 48)")
    p.set_defaults(func=_demo)
    return parser


def run() -> int:
    """The ``streamer`` program: start again with the runtime environment if it is missing
    (see ``streamer.settings.RUNTIME_ENV``), then ``main``."""
    env = with_runtime_env()
    if env is not None:
        os.execve(sys.executable, [sys.executable, "-m", "streamer", *sys.argv[1:]], env)
    return main()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error argparse already printed (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command != "serve":  # serve logs JSON lines at its own level
        logging.basicConfig(level=logging.WARNING, format="streamer: %(levelname)s: %(message)s")
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its failures reach us as errors
    # Traces when the standard OTEL_* variables ask for them (streamer/tracing.py).
    try:
        tracing.configure()
    except ValueError as exc:
        print(f"streamer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print(f"streamer {args.command}: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"streamer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one clear line for the user; DEBUG logs show the traceback
        if Settings.from_env().log_level.upper() == "DEBUG":
            traceback.print_exc()
        print(f"streamer {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        tracing.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
