"""The ``streamer`` command line: ``serve``, ``ingest``, ``query``, ``collections``,
``stats`` and ``demo``, each working on an embedded store or a running service."""

from streamer.cli.main import run

__all__ = ["run"]
