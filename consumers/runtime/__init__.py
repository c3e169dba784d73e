"""What every long-lived component shares, below every other room: the lifecycle of
components and their parts (``lifecycle``), supervised background tasks (``tasks``) and durable
file writes (``files``: fsync a path, replace a file atomically). Imports nothing of ours."""
