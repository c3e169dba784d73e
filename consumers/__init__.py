"""Pipeline stages in data-flow order: intake, batch, load, embed, log, index, query, reply.
The embedded client and the Kafka service run these same stages."""
