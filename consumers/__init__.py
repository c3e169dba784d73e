"""The pipeline stages, shared by the embedded client and the Kafka service, in rooms by
role (each subpackage says what it owns): ``runtime`` (lifecycle, supervised tasks, durable
files), ``loading`` (images: the wire codec, data loaders, remote URIs), ``validation``
(Chroma's request and admin rules, filters), ``embedding`` (models, the model thread,
runtimes, weights), ``storage`` (log, checkpoints, index, store, catalog, backfill),
``reads`` (get and query), ``write`` (intake, the write pipeline, the local store) and
``upstream`` (source mappings). Imports point down that list, checked by tests/test_layout.py.
Nothing here speaks Kafka or HTTP, and nothing here imports ``streamer``. The package holds no
Kafka consumers: the name stays because the design card fixes it (stages *consume* records,
from a topic or from an in-process queue alike), and renaming it would break every import
that the card documents."""

import contextlib

# OpenVINO before usearch (consumers.storage.index): loaded after it, OpenVINO's CPU plugin fails to
# compile any model (an empty "Exception from core.cpp") and the auto backend falls back.
with contextlib.suppress(ImportError):
    import openvino  # noqa: F401
