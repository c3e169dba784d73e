"""The write path: the intake batcher (``batch``), the pipeline that prepares, embeds and
resolves writes into each collection's mutations (``pipeline``) and a process's local store
(``local``), which wires the catalog, the collection locks, the model thread, the pipeline
and the index backfill together."""
