"""Everything that speaks Kafka: ``KafkaClient``/``AsyncKafkaClient`` (producers and the
reply-topic RPC), and the service that ``streamer serve`` runs (the transactional writer, the
replica of the state topic, the reader answering queries, upstream sources, wire checks for
untrusted events and the built-in model runtimes). Nothing here imports aiokafka until a
module of this package is imported."""
