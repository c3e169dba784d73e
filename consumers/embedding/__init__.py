"""Vectors from texts and images: the OpenCLIP embedding functions (``embed``), the model
thread that serves queries before writes (``embedq``), the inference runtimes behind
``backend="auto"`` (``backends``: torch or OpenVINO), resolving and verifying weights
(``weights``) and the checkpoints that ship in the package (``models``: streamer-tiny)."""
