"""The Chroma-shaped public API: ``Client``/``AsyncClient`` and their collections, the
``Backend`` protocol a client talks to, and the embedded ``Engine`` (the in-process backend:
micro-batched pipeline, durable log, checkpoints). The Kafka client in ``streamer.kafka``
reuses these collections over another backend."""
