"""Contracts shared by every process: records, events, replies and error codes. No I/O here."""
