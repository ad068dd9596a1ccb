"""An event forwarded again by the resolver (identity resolution, after a worker died
before committing) is applied once, however many of the person's events lie between the
two copies: recognised by its origin in the events topic (state.is_forwarded_again)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline import state as core
from pipeline.engine import PartitionEngine
from pipeline.events import Chat, EventType, Purchase
from tests.unit.test_engine import DAY, POLICY, T0, _ev

PERSON = "pa"


def _events(n: int, first: int = 0) -> list:  # type: ignore[type-arg]
    """Purchases and chats of one person, an hour apart."""
    out = []
    for i in range(first, first + n):
        payload, kind = (
            (Purchase(f"o{i}", 1_000 + i), EventType.PURCHASE)
            if i % 3 == 0
            else (Chat("inbound", "customer"), EventType.CHAT)
        )
        out.append(_ev(f"e{i}", PERSON, kind, payload, T0 + i * 3_600_000))
    return out


def test_copies_forwarded_again_beyond_the_dedup_window_are_applied_once() -> None:
    store: dict[bytes, core.PersonState] = {}
    engine = PartitionEngine(POLICY, store, 3 * DAY)
    events = _events(60)
    resolved = 0  # the offset in the resolved topic grows with every copy
    for source_offset, e in enumerate(events):  # forwarded from events partition 2
        engine.on_event(e, PERSON, resolved, source=(2, source_offset))
        resolved += 1
    (key,) = store
    once = store[key]
    assert once.source_offsets == ((2, 59),)
    # The resolver restarts from offset 10 and forwards 50 events again: far more than
    # the person's dedup window (16 recent ids) holds.
    assert len(events) - 10 > POLICY.dedup_window
    for source_offset, e in enumerate(events[10:], start=10):
        out = engine.on_event(e, PERSON, resolved, source=(2, source_offset))
        resolved += 1
        assert out.redelivered and not out.changes
    assert store[key] == once
    assert store[key].agg.lifetime_orders == 20


def test_without_the_origin_only_the_dedup_window_recognises_a_copy() -> None:
    """What the origin adds: the same copies without it (as before) count twice."""
    store: dict[bytes, core.PersonState] = {}
    engine = PartitionEngine(POLICY, store, 3 * DAY)
    events = _events(60)
    for offset, e in enumerate([*events, *events[10:]]):
        engine.on_event(e, PERSON, offset)
    (state,) = store.values()
    assert state.agg.lifetime_orders > 20


def test_other_partitions_keep_their_own_offsets() -> None:
    """A person linked across channels gets events from several events partitions, whose
    offsets are unrelated: a low offset of another partition is a new event."""
    s, _ = core.apply(None, _events(1)[0], PERSON, POLICY, 0, source=(1, 900))
    later = _events(1, first=1)[0]
    assert core.is_forwarded_again(s, (1, 900)) and core.is_forwarded_again(s, (1, 5))
    assert not core.is_forwarded_again(s, (0, 5))
    s, _ = core.apply(s, later, PERSON, POLICY, 1, source=(0, 5))
    assert s.source_offsets == ((0, 5), (1, 900))
    assert s.version == 2
    assert not core.is_forwarded_again(s, (1, 901)) and not core.is_forwarded_again(s, (0, 6))
    assert core.is_forwarded_again(s, (0, 5)) and core.is_forwarded_again(s, (1, 900))
    assert not core.is_forwarded_again(s, (2, 0))


def test_a_merge_keeps_the_latest_origin_of_each_partition() -> None:
    a, _ = core.apply(None, _events(1)[0], PERSON, POLICY, 0, source=(1, 40))
    b, _ = core.apply(None, _events(1, first=1)[0], "pb", POLICY, 0, source=(1, 70))
    b, _ = core.apply(b, _events(1, first=2)[0], "pb", POLICY, 1, source=(3, 8))
    merged, _ = core.merge(a, b, "lumi", PERSON, "pb", POLICY)
    assert merged.source_offsets == ((1, 70), (3, 8))


def test_events_not_forwarded_leave_no_origin() -> None:
    s, _ = core.apply(None, _events(1)[0], PERSON, POLICY, 0)
    assert s.source_offsets == ()
    assert not core.is_forwarded_again(s, None)


@given(
    st.dictionaries(st.integers(0, 40), st.integers(0, 2**40), max_size=6),
    st.integers(0, 40),
    st.integers(0, 2**40),
)
def test_an_origin_taken_in_raises_its_partition_and_keeps_the_others(
    before: dict[int, int], partition: int, offset: int
) -> None:
    """The origins stay one entry per partition, sorted by partition; the partition of
    the new origin holds the larger of the two offsets, every other one is unchanged."""
    offsets = tuple(sorted(before.items()))
    after = core._with_source(offsets, (partition, offset))
    partitions = [p for p, _ in after]
    assert partitions == sorted(set(partitions))
    assert set(partitions) == set(before) | {partition}
    for p, last in after:
        assert last == (max(before.get(p, -1), offset) if p == partition else before[p])
    if before.get(partition, -1) >= offset:
        assert after is offsets  # nothing moved: the same tuple, so no new state value
