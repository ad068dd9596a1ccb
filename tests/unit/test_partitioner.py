"""agents.partitioner picks the partition aiokafka's default partitioner (Kafka's Java
client's murmur2) picks, first time and from its kept hashes."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from agents.partitioner import CachedPartitioner
from pipeline.app import create_app
from pipeline.settings import Settings


def test_the_same_partition_as_aiokafkas_default_for_new_and_remembered_keys() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(rng.randint(0, 40)) for _ in range(2000)]
    keys += [f"p-{i}".encode() for i in range(2000)] + ["微信-用户".encode()]
    cached, default = CachedPartitioner(keys_kept=500), DefaultPartitioner()
    for partitions in (1, 4, 12, 7):
        all_partitions = list(range(partitions))
        for _ in range(2):  # the second round mostly from kept hashes, some evicted
            for key in keys:
                got = cached(key, all_partitions, all_partitions)
                assert got == default(key, all_partitions, all_partitions), key


def test_unkeyed_records_go_to_an_available_partition() -> None:
    cached = CachedPartitioner()
    picks = {cached(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)}
    assert picks == {1, 3}


def test_the_worker_app_partitions_with_it(tmp_path: object) -> None:
    app = create_app(Settings(data_dir=tmp_path), bootstrap="localhost:9092")
    assert isinstance(app.conf.producer_partitioner, CachedPartitioner)
    assert app.producer.partitioner is app.conf.producer_partitioner
