"""The HTTP/websocket gateway (aiohttp): the websocket request/reply protocol, live queries,
bearer-token auth, the search page and its static files, health and metrics endpoints. It runs
over any ``Backend`` (the embedded engine or the Kafka client) and knows nothing of how the
process around it is wired (``streamer.server`` does that)."""
