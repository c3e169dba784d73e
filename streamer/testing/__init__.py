"""What the test suite and the benchmarks both drive the system with, so neither imports the
other: a ``streamer serve`` process on the local broker (``kafka``), the gateway's WebSocket
client and test tokens (``gateway``), local servers on free ports (``servers``: moto's S3),
``chroma run`` beside ``streamer serve`` for the HTTP API (``chroma``) and sample photos
(``images``). Needs no test extras to import (scikit-image and moto only when used); nothing
else in streamer imports it."""
