"""Contracts shared by every process: records (``records``), wire events and their
encoding (``events``), the typed error tree with stable codes (``errors``), the where-filter
schema and the JSON Schema / AsyncAPI export (``contracts``). No I/O and no imports from the
rest of the project, so every layer and every other language can depend on it."""
