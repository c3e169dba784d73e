"""Chroma's request rules, checked before anything is written or read: request and metadata
validation (``validate``), ``where``/``where_document`` filters (``where``: checked here and
compiled for the store) and collection administration rules (``admin``: create, modify,
the spaces and spec they settle)."""
