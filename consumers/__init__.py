"""Pipeline stages in data-flow order: intake, batch, load, embed, log, index, query, reply.
The embedded client and the Kafka service run these same stages."""

import contextlib

# OpenVINO before usearch (consumers.index): loaded after it, OpenVINO's CPU plugin fails to
# compile any model (an empty "Exception from core.cpp") and the auto backend falls back.
with contextlib.suppress(ImportError):
    import openvino  # noqa: F401
