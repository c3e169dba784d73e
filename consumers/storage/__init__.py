"""Durability and indexing of a process's collections: the CRC-framed mutation log (``log``),
snapshots (``checkpoint``), the usearch HNSW index (``index``), one collection's records,
vectors and filters (``store``), the set of collections on disk (``catalog``) and the
background step that moves a log tail into the graph (``backfill``)."""
