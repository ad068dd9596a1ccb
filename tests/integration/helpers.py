"""Helpers for tests on the real local stack: worker processes, publishing, waiting."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families

from pipeline.broker import free_port
from pipeline.codec import Codecs
from pipeline.events import Touchpoint, UserRef
from pipeline.identity import partition_key
from pipeline.settings import Settings

PII_KEY = "integration-tests-key-0123456789abcdef"


def isolated_settings(bootstrap: str, chdb_dsn: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings with this test's own topics, consumer groups and ClickHouse database
    (a unique prefix), so tests share a broker and a chDB engine without seeing each
    other's data."""
    tag = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = dict(
        kafka_bootstrap=bootstrap,
        broker_compat="tansu",
        app_id=f"tf-{tag}",
        events_topic=f"t{tag}.events",
        changes_topic=f"t{tag}.segment-changes",
        dlq_topic=f"t{tag}.dlq",
        links_topic=f"t{tag}.identity-links",
        resolved_topic=f"t{tag}.resolved",
        referrals_topic=f"t{tag}.referrals",
        thresholds_topic=f"t{tag}.rfm-thresholds",
        clickhouse_dsn=chdb_dsn,
        clickhouse_database=f"t_{tag}",
        sink_group=f"t{tag}-sink",
        sink_flush_seconds=0.2,
        data_dir=data_dir,
        pii_key=PII_KEY,
    )
    fields.update(overrides)
    return Settings(**fields)


async def async_wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


class Worker:
    """A `touchflow worker` process configured from a Settings object via a YAML file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        # Info level: a failing test's report then shows where the worker got to (group
        # join, recovery, "Worker ready"); the log is only read on failure.
        config = self.log.with_suffix(".yaml")
        env = cli_env(self.settings, config, web_port=free_port(), log_level="info")
        env.pop("TOUCHFLOW_PII_KEY", None)  # workers only check that ids are hashed
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if not self.alive():
            return self.process.returncode if self.process else None
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The log's last lines, without Faust's boxed tables (banner, assignments)."""
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join([t for t in text if t.strip() and t[0] not in "|+"][-lines:])


async def publish(settings: Settings, events: list[Touchpoint | bytes]) -> None:
    """Publish events in order (raw bytes go as they are, keyed like the first event)."""
    codecs = Codecs()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        key = b"raw"
        for e in events:
            if isinstance(e, bytes):
                await producer.send_and_wait(settings.events_topic, e, key=key)
            else:
                key = partition_key(e.user)
                await producer.send_and_wait(settings.events_topic, codecs.encode_event(e), key=key)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[Any]:
    """The first `count` records of a topic (all partitions), or fail after `timeout`."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: {len(records)} records after {timeout}s, expected {count}"
                )
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(msgs)
        # Anything beyond `count` that is already there is a failure too: read a moment more.
        for msgs in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(msgs)
    finally:
        await consumer.stop()
    return records


def cli_env(settings: Settings, config: Path, **overrides: Any) -> dict[str, str]:
    """Environment for a `touchflow` subprocess: `settings` (+ overrides) as a YAML config
    file; secrets (PII key, API token) travel in the environment like in production."""
    data = settings.model_dump(mode="json", exclude={"pii_key", "api_token"})
    data.update(overrides)
    config.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHFLOW_")}
    env["TOUCHFLOW_CONFIG"] = str(config)
    if settings.pii_key is not None:
        env["TOUCHFLOW_PII_KEY"] = settings.pii_key.get_secret_value()
    if settings.api_token is not None:
        env["TOUCHFLOW_API_TOKEN"] = settings.api_token.get_secret_value()
    return env


def run_cli(
    settings: Settings, config: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`touchflow ARGS` as a real process on the test's settings."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=cli_env(settings, config),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- scraping /metrics ---------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def by_labels(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """Non-zero samples of `name` summed by the values of `keys` (like PromQL `sum by`)."""
    out: dict[tuple[str, ...], float] = {}
    for (n, labels), v in samples.items():
        if n == name and v:
            d = dict(labels)
            key = tuple(d[k] for k in keys)
            out[key] = out.get(key, 0.0) + v
    return out


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def web_port(worker: Worker) -> int:
    """The worker's web port, from the config file the test helper wrote for it."""
    return int(yaml.safe_load(worker.log.with_suffix(".yaml").read_text())["web_port"])


# -- choosing users by partition -------------------------------------------------------------


def partition_of(user: UserRef, partitions: int) -> int:
    """The partition the producers (aiokafka's default partitioner) put a user's events on."""
    ids = list(range(partitions))
    return int(DefaultPartitioner()(partition_key(user), ids, ids))


def openid_where(partitions: int, same_as: UserRef, same: bool, skip: int = 0) -> UserRef:
    """An openid user whose events land on the same partition as `same_as` (or another)."""
    home = partition_of(same_as, partitions)
    for n in range(skip, skip + 200):
        user = UserRef("openid", f"h1:{n:032x}")
        if user != same_as and (partition_of(user, partitions) == home) == same:
            return user
    raise AssertionError("no such user among 200 candidates")
