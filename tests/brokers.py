"""Kafka brokers a test owns (compose/kafka scripts, own data dirs and ports chosen free at
runtime): one that it may stop and start, or a 3-node cluster that it may SIGKILL a node of.
The shared broker on 9092 is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamer.testing.kafka import ROOT

SCRIPTS = ROOT / "compose/kafka"


def free_ports(n: int) -> list[int]:
    """n distinct ports nothing listens on (all held open at once, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


class PrivateBroker:
    """A second single-node broker that a test may stop and start."""

    def __init__(self, data: Path) -> None:
        self.port, controller, sasl = free_ports(3)
        self.env = {**os.environ, "STREAMER_KAFKA_DATA": str(data),
                    "STREAMER_KAFKA_PORT": str(self.port),
                    "STREAMER_KAFKA_CONTROLLER_PORT": str(controller),
                    "STREAMER_KAFKA_SASL_PORT": str(sasl),
                    "STREAMER_KAFKA_SECURE": "0",  # the TLS listeners stay the shared one's
                    "STREAMER_KAFKA_HEAP_OPTS": "-Xms64m -Xmx384m",
                    "STREAMER_KAFKA_START_TIMEOUT": "120"}
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _run(self, script: str) -> None:
        subprocess.run([str(SCRIPTS / script)], env=self.env, check=True,
                       timeout=180, capture_output=True)

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")


class KafkaCluster:
    """Three KRaft nodes (broker+controller each; replication 3, min.insync.replicas 2) run by
    compose/kafka/cluster. Node ids are 1, 2 and 3."""

    def __init__(self, data: Path) -> None:
        self.data = data
        ports = free_ports(9)
        self.ports = ports[:3]
        self.env = {**os.environ, "STREAMER_KAFKA_CLUSTER_DATA": str(data),
                    "STREAMER_KAFKA_CLUSTER_PORTS": " ".join(map(str, ports[:3])),
                    "STREAMER_KAFKA_CLUSTER_CONTROLLER_PORTS": " ".join(map(str, ports[3:6])),
                    "STREAMER_KAFKA_CLUSTER_SASL_PORTS": " ".join(map(str, ports[6:])),
                    "STREAMER_KAFKA_START_TIMEOUT": "150", "STREAMER_KAFKA_STOP_TIMEOUT": "15"}
        self.bootstrap = ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _run(self, command: str) -> None:
        subprocess.run([str(SCRIPTS / "cluster"), command], env=self.env, check=True,
                       timeout=200, capture_output=True)

    def start(self) -> None:
        """Starts the nodes that are not running; returns once every node sees all three."""
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def kill(self, node: int) -> None:
        """SIGKILL: no controlled shutdown, no leadership handed over."""
        pid = int((self.data / f"node{node}" / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)

    def partitions(self, topic: str) -> list[dict[str, Any]]:
        """The topic's partitions as the cluster describes them: partition, leader (node id,
        -1 while there is none), replicas, isr."""
        async def describe() -> list[dict[str, Any]]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                [desc] = await admin.describe_topics([topic])
                return list(desc["partitions"])
            finally:
                await admin.close()
        return asyncio.run(describe())

    def topic_config(self, topic: str, name: str) -> str:
        """A setting as the topic sees it (its own or the broker default)."""
        async def describe() -> str:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                [described] = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})])
                [resource] = described.resources
                return str(next(e[1] for e in resource[4] if e[0] == name))
            finally:
                await admin.close()
        return asyncio.run(describe())

    def busiest_leader(self, topic: str) -> int:
        """The node that leads the most partitions of the topic."""
        return int(Counter(p["leader"] for p in self.partitions(topic)).most_common(1)[0][0])
