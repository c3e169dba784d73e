"""Prometheus metrics of the service, exposed on the gateway's ``/metrics``."""

from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZE = Histogram("streamer_batch_records", "Records per writer batch",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
BATCH_SECONDS = Histogram("streamer_batch_seconds", "Writer batch time: load, embed, resolve, commit")
RECORDS = Counter("streamer_records_total", "Write records processed", ["outcome"])
QUERIES = Counter("streamer_queries_total", "RPC requests answered", ["op", "outcome"])
QUERY_SECONDS = Histogram("streamer_query_seconds", "RPC latency in the service", ["op"])
LAG = Gauge("streamer_consumer_lag", "Records behind the log end", ["topic", "partition"])
REPLICA_PROGRESS = Gauge("streamer_replica_progress", "Request offset applied by the replica",
                         ["partition"])
FENCED = Counter("streamer_writer_fenced_total",
                 "Writer batches dropped because another writer took their partition")
FORWARDED = Counter("streamer_writer_forwarded_total",
                    "Write events forwarded to the partition their records belong on (a "
                    "producer whose partitioner is not murmur2's, or a delete spanning partitions)")
