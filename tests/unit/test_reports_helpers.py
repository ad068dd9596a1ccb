"""Pure helpers of the store, the sink and the reports: parameters, tokens, spans."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from sinks import reports, store
from sinks.writer import Batch, columnar, insert_token, take


def test_report_parameters_default_to_all_brands_and_all_days() -> None:
    assert reports.parameters(None, None, None) == {
        "brand": "",
        "since": date(1970, 1, 1),
        "until": date(2149, 6, 6),
    }
    assert reports.parameters("lumi", date(2026, 9, 1), date(2026, 9, 30)) == {
        "brand": "lumi",
        "since": date(2026, 9, 1),
        "until": date(2026, 9, 30),
    }
    with pytest.raises(ValueError, match="after"):
        reports.parameters(None, date(2026, 10, 1), date(2026, 9, 1))


def test_every_report_has_a_query_and_declared_columns() -> None:
    assert set(reports.QUERIES) == set(reports.COLUMNS) == set(reports.NAMES)
    assert len(reports.NAMES) == 8
    for sql in reports.QUERIES.values():
        # Bound parameters only: no value is ever formatted into the SQL.
        assert "{brand:String}" in sql
        assert "{since:Date}" in sql or "{until:Date}" in sql or "current_people" in sql


def test_unknown_report_is_refused_before_any_query() -> None:
    with pytest.raises(ValueError, match="unknown report"):
        reports.run(object(), "nope")


def test_only_settings_the_server_knows_are_sent() -> None:
    known = {"insert_deduplicate", "max_threads"}
    assert store.supported(store.INSERT_SETTINGS, known) == {"insert_deduplicate": 1}
    assert store.supported(store.INSERT_SETTINGS, set()) == {}


def test_the_token_names_the_span_not_the_batch() -> None:
    a = insert_token("events", "t.events", 1, 100, 199)
    assert a == insert_token("events", "t.events", 1, 100, 199)
    others = {
        insert_token("events", "t.events", 1, 100, 200),
        insert_token("events", "t.events", 0, 100, 199),
        insert_token("segment_changes", "t.events", 1, 100, 199),
        insert_token("events", "u.events", 1, 100, 199),
    }
    assert a not in others and len(others) == 4


def msgs(*offsets: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(offset=o) for o in offsets]


def test_take_stops_a_replayed_span_at_its_recorded_end() -> None:
    got, reached = take(msgs(5, 6, 7), None)
    assert [m.offset for m in got] == [5, 6, 7] and not reached
    got, reached = take(msgs(5, 6, 7, 8), 6)
    assert [m.offset for m in got] == [5, 6] and reached
    got, reached = take(msgs(5, 6), 9)
    assert [m.offset for m in got] == [5, 6] and not reached
    got, reached = take(msgs(5, 6, 8), 7)  # offset 7 compacted away: passed all the same
    assert [m.offset for m in got] == [5, 6] and reached


def test_a_batch_commits_the_next_offset_and_holds_back_unfinished_replays() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    batch = Batch()
    for offset in (10, 11, 12):
        batch.add(a, offset, [offset])
    batch.add(b, 40, None)  # a message that makes no row still moves the offset
    batch.add(b, 41, [41])
    assert batch.messages == 5
    assert batch.commits() == {a: 13, b: 42}
    assert batch.spans[b].rows == [[41]] and batch.spans[b].first == 40

    following = batch.hold_back({b})
    assert set(batch.spans) == {a} and batch.messages == 3
    assert set(following.spans) == {b} and following.messages == 2
    assert following.spans[b].last == 41


def test_rows_are_sent_as_columns() -> None:
    assert columnar([[1, "a"], [2, "b"], [3, "c"]], 2) == [[1, 2, 3], ["a", "b", "c"]]
    assert columnar([], 3) == [[], [], []]
    with pytest.raises(ValueError):
        columnar([[1, "a"], [2]], 2)
