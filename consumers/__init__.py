"""The pipeline stages, shared by the embedded client and the Kafka service: validation
(``validate``, ``where``, ``admin``), intake (``batch``), loading (``load``, ``decode``), embedding
(``embed``), the write pipeline (``pipeline``: prepare, embed, resolve), durability and
indexing (``log``, ``checkpoint``, ``index``, ``backfill``, ``store``, ``catalog``), reads
(``query``), upstream mappings (``mapping``), a process's local store (``local``) and the
lifecycle every long-lived component shares (``lifecycle``). Nothing here speaks Kafka or
HTTP, and nothing here imports ``streamer``. The package holds no Kafka consumers: the name
stays because the design card fixes it (stages *consume* records, from a topic or from an
in-process queue alike), and renaming it would break every import that the card documents."""

import contextlib

# OpenVINO before usearch (consumers.index): loaded after it, OpenVINO's CPU plugin fails to
# compile any model (an empty "Exception from core.cpp") and the auto backend falls back.
with contextlib.suppress(ImportError):
    import openvino  # noqa: F401
