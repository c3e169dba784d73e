"""The ``streamer`` command line: ``serve``, ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from streamer.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    from streamer.service import serve

    overrides = {}
    if args.kafka:
        overrides["kafka_bootstrap"] = args.kafka
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    settings = Settings.from_env(**overrides)
    logging.basicConfig(level=settings.log_level,
                        format='{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    asyncio.run(serve(settings))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from streamer.demo import run_demo

    return run_demo(n=args.n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the Kafka service (writer, replica, reader)")
    p.add_argument("--kafka", help="bootstrap servers (default: STREAMER_KAFKA_BOOTSTRAP)")
    p.add_argument("--data-dir", help="local replica directory (default: in memory)")
    p.set_defaults(func=_serve)
    p = sub.add_parser("demo", help="embedded demo: index generated images, search by text")
    p.add_argument("-n", type=int, default=48, help="number of images")
    p.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"streamer: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
