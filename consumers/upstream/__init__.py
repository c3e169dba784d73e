"""Source mappings: an upstream event (object-store notification, CDC envelope, app JSON)
becomes collection writes, declared in a TOML/JSON file (``mapping``) with a small expression
language over the event (``expr``). Pure: the Kafka bridge that feeds it lives in streamer."""
