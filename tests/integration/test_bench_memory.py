"""The benchmark's memory part (bench/recovered_memory.py) at a small size, on the real
broker with a real worker: the worker recovers every state written to its changelog and
processes events after that. No figure is asserted beyond being there and consistent."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench import recovered_memory, workload
from pipeline.broker import EmbeddedBroker
from pipeline.codec import Codecs
from pipeline.rfm import MS_PER_DAY
from pipeline.settings import Settings
from tests.integration.helpers import PII_KEY

pytestmark = pytest.mark.integration


def test_partition_of_matches_the_producers_partitioner() -> None:
    # The states must sit on the partition of their person's events (what a worker wrote).
    from pipeline.events import UserRef
    from pipeline.identity import person_id_for
    from tests.integration.helpers import partition_of

    users = [UserRef("openid", f"h1:{n:032x}") for n in range(50)]
    assert [recovered_memory.partition_of(person_id_for(u), 4) for u in users] == [
        partition_of(u, 4) for u in users
    ]


async def test_a_worker_recovers_every_state_written_and_reports_its_memory(
    settings: Settings, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    key = PII_KEY.encode()
    now = int(time.time() * 1000)
    w = workload.build(600, 300, key, now - 400 * MS_PER_DAY, 365)
    templates = recovered_memory.final_states(w, settings)
    assert len(templates) == w.states
    assert Codecs().decode_state(templates[0]).version > 0
    warm = workload.build(50, 20, key, now - 420 * MS_PER_DAY, 10, seed=1, id_prefix="warm")
    people = 2_000

    out = await recovered_memory.run(settings, templates, people, warm, tmp_path, broker)

    # The warm-up's own people join the recovered ones.
    assert people < out["memory_people_in_state"] <= people + warm.states
    assert out["memory_worker_rss_bytes"] > 0
    assert out["memory_worker_rss_per_person"] == out["memory_worker_rss_bytes"] / people
    assert out["memory_changelog_value_bytes"] >= people * min(len(t) for t in templates)
