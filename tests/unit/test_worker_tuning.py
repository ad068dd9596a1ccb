"""Worker settings Faust does not expose (agents.consumer_tuning, pipeline.app.QuietWorker),
and the same fetch wait for the sink's and automations' consumers, on real Faust and
aiokafka objects that are never connected."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.app import QuietWorker, create_app
from pipeline.automation import ChangeConsumer
from pipeline.settings import FAUST_FETCH_MAX_WAIT_MS, TANSU_FETCH_MAX_WAIT_MS, Settings
from sinks.writer import ClickHouseSink


def worker_consumer_wait_ms(settings: Settings) -> int:
    app = create_app(settings)

    async def build() -> int:  # aiokafka objects are made inside a running loop
        thread = app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(app.transport)
        try:
            wait: int = consumer._fetch_max_wait_ms  # AIOKafkaConsumer.start() hands it on
        finally:
            await consumer.stop()
        return wait

    return asyncio.run(build())


def test_the_worker_consumer_waits_less_on_tansu_and_as_faust_does_elsewhere(
    tmp_path: Path,
) -> None:
    kafka = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    tansu = kafka.model_copy(update={"broker_compat": "tansu"})
    assert worker_consumer_wait_ms(kafka) == FAUST_FETCH_MAX_WAIT_MS
    assert worker_consumer_wait_ms(tansu) == TANSU_FETCH_MAX_WAIT_MS
    assert TANSU_FETCH_MAX_WAIT_MS < FAUST_FETCH_MAX_WAIT_MS


def test_an_explicit_fetch_wait_wins_on_any_broker(tmp_path: Path) -> None:
    for compat in ("none", "tansu"):
        settings = Settings(
            kafka_bootstrap="127.0.0.1:1",
            data_dir=tmp_path,
            broker_compat=compat,
            fetch_max_wait_ms=321,
        )
        assert worker_consumer_wait_ms(settings) == 321


def sink_and_automation_wait_ms(
    settings: Settings, kafka_options: dict[str, Any] | None = None
) -> tuple[int, int]:
    """The fetch waits of the ClickHouse sink's and an automation's consumers, built as
    they start them (never connected)."""

    async def build() -> tuple[int, int]:  # aiokafka objects are made inside a running loop
        sink = ClickHouseSink(settings, settings.kafka_bootstrap)
        runner = ChangeConsumer(settings, group="g", kafka_options=kafka_options or {})
        consumers = [sink.new_consumer(), runner.new_consumer()]
        try:
            return consumers[0]._fetch_max_wait_ms, consumers[1]._fetch_max_wait_ms
        finally:
            for consumer in consumers:
                await consumer.stop()
            sink.close()

    return asyncio.run(build())


def test_the_sink_and_automations_wait_for_a_fetch_as_the_worker_does(tmp_path: Path) -> None:
    """aiokafka's default (500 ms) would hold rows back from ClickHouse, and changes from
    automations, for up to that long on Tansu."""
    kafka = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    tansu = kafka.model_copy(update={"broker_compat": "tansu"})
    explicit = kafka.model_copy(update={"fetch_max_wait_ms": 321})
    assert sink_and_automation_wait_ms(kafka) == (FAUST_FETCH_MAX_WAIT_MS,) * 2
    assert sink_and_automation_wait_ms(tansu) == (TANSU_FETCH_MAX_WAIT_MS,) * 2
    assert sink_and_automation_wait_ms(explicit) == (321, 321)


def test_an_automation_s_own_fetch_wait_wins(tmp_path: Path) -> None:
    tansu = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, broker_compat="tansu")
    _, wait = sink_and_automation_wait_ms(tansu, {"fetch_max_wait_ms": 77})
    assert wait == 77


@pytest.fixture
def root_level() -> Iterator[None]:
    level, handlers = logging.root.level, list(logging.root.handlers)
    yield
    logging.root.setLevel(level)
    logging.root.handlers[:] = handlers


@pytest.mark.usefixtures("root_level")
def test_the_worker_leaves_the_root_logger_at_the_chosen_level(tmp_path: Path) -> None:
    """Faust's spinner would set the root logger to DEBUG at level warn, so every
    debug call in the per-message paths would build a record nobody prints."""
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path))
    assert app.conf.Worker is QuietWorker
    worker = QuietWorker(app, loglevel="warn")
    logging.root.setLevel(logging.WARNING)
    if not logging.root.handlers:
        logging.root.addHandler(logging.NullHandler())
    worker.on_setup_root_logger(logging.root, logging.WARNING)
    assert logging.root.level == logging.WARNING
    assert not logging.getLogger("faust.topics").isEnabledFor(logging.DEBUG)
