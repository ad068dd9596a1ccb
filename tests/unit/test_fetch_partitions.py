"""What a fetch may return, and which fetched records Faust would drop
(agents.fetch_partitions). aiokafka's real fetcher: tests/integration/test_fetch_partitions.py."""

from __future__ import annotations

from typing import NamedTuple

from agents.fetch_partitions import dropped_stream_records, fetchable


class TP(NamedTuple):
    topic: str
    partition: int


class Record(NamedTuple):
    offset: int


EVENTS_0, EVENTS_1, CHANGELOG_0 = TP("events", 0), TP("events", 1), TP("state-changelog", 0)


def is_changelog(tp: TP) -> bool:
    return tp.topic.endswith("-changelog")


def test_an_empty_active_set_still_filters_and_follows_the_live_set() -> None:
    active: set[TP] = set()
    view = fetchable(active)
    assert view  # aiokafka reads a false value as "every partition"
    assert EVENTS_0 not in view
    active.add(EVENTS_0)  # resumed while the fetch waits: served by the same fetch
    assert EVENTS_0 in view and EVENTS_1 not in view
    active.clear()
    assert view and EVENTS_0 not in view


def test_a_client_only_app_fetches_every_partition() -> None:
    assert fetchable(None) is None


def test_dropped_records_are_the_paused_stream_partitions() -> None:
    fetched = {
        EVENTS_0: [Record(200), Record(201), Record(231)],
        EVENTS_1: [Record(100)],
        CHANGELOG_0: [Record(7)],
    }
    # events 1 active; events 0 and the changelog paused (the recovery's last moment)
    dropped = dropped_stream_records(fetched, {EVENTS_1}, set(), is_changelog)
    assert dropped == {EVENTS_0: (200, 231, 3)}


def test_buffered_and_active_partitions_are_delivered() -> None:
    fetched = {EVENTS_0: [Record(5)], EVENTS_1: [Record(9)], CHANGELOG_0: [Record(1)]}
    # Faust takes a full partition out of the active set but still delivers it
    assert dropped_stream_records(fetched, {EVENTS_1}, {EVENTS_0}, is_changelog) == {}
    assert dropped_stream_records({EVENTS_0: []}, set(), set(), is_changelog) == {}
