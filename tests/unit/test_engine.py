"""The partition engine: event time, due-time index, determinism, order independence.

The reference is a from-scratch batch computation: every person's aggregates computed from
the whole event list at once (orders grouped with their refunds, days sorted), then the
segments derived at the cut-off. The stream must agree with it whatever the arrival order
within the allowed lateness.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, MutableMapping
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as hs

from pipeline import rfm
from pipeline import state as core
from pipeline.engine import Outcome, PartitionEngine
from pipeline.events import (
    Chat,
    EventType,
    Join,
    Purchase,
    Refund,
    Share,
    Touchpoint,
    UserRef,
)
from pipeline.identity import seed_of
from pipeline.rules import compile_rules

DAY = rfm.MS_PER_DAY
HOUR = 3_600_000
T0 = 19_675 * DAY
LATENESS = 3 * DAY
POLICY = core.Policy()  # the built-in tag and layer rules included
PEOPLE = ["pa", "pb", "pc"]


def _ev(eid: str, person: str, type: EventType, payload: object, at: int) -> Touchpoint:
    user = UserRef("openid", "h1:" + person.ljust(32, "0"))
    return Touchpoint(eid, type, "lumi", "wecom", user, at, payload)  # type: ignore[arg-type]


_step = hs.tuples(
    hs.sampled_from(PEOPLE),
    hs.sampled_from(["purchase", "purchase", "refund", "chat_in", "chat_out", "share", "join"]),
    hs.integers(0, 25 * DAY),  # gap since the previous event in the partition
    hs.integers(1, 120_000),  # amount
    hs.integers(0, 7),  # which of the person's orders a refund names
    hs.booleans(),  # a share names an invitee
)


def _history(steps: list[tuple[str, str, int, int, int, bool]]) -> list[tuple[str, Touchpoint]]:
    """(person, event) in event-time order. Each person has at most 8 orders, so every
    refund finds its order among the recent ones kept in state."""
    out: list[tuple[str, Touchpoint]] = []
    orders: dict[str, list[str]] = defaultdict(list)
    at = T0
    for i, (person, kind, gap, amount, target, invited) in enumerate(steps):
        at += gap
        eid = f"e{i}"
        if kind == "purchase" and len(orders[person]) < 8:
            orders[person].append(f"o{i}")
            e = _ev(eid, person, EventType.PURCHASE, Purchase(f"o{i}", amount), at)
        elif kind == "refund" and orders[person]:
            order = orders[person][target % len(orders[person])]
            e = _ev(eid, person, EventType.REFUND, Refund(order, amount), at)
        elif kind == "chat_out":
            e = _ev(eid, person, EventType.CHAT, Chat("outbound", "staff"), at)
        elif kind == "share":
            invitee = UserRef("openid", "h1:" + "f" * 32) if invited else None
            e = _ev(eid, person, EventType.SHARE, Share("c", invitee), at)
        elif kind == "join":
            e = _ev(eid, person, EventType.JOIN, Join("follow", "qr_code"), at)
        else:
            e = _ev(eid, person, EventType.CHAT, Chat("inbound", "customer"), at)
        out.append((person, e))
    return out


histories = hs.lists(_step, min_size=1, max_size=60).map(_history)


def _batch(events: list[Touchpoint]) -> core.Aggregates:
    """One person's aggregates from all their events at once (the reference)."""
    paid: dict[str, tuple[int, int]] = {}  # order -> (day, amount)
    refunded: dict[str, int] = defaultdict(int)
    engagements = shares = invitations = 0
    joins = [e for e in events if e.type == EventType.JOIN]
    leaves = [e for e in events if e.type == EventType.LEAVE]
    for e in events:
        p = e.payload
        if isinstance(p, Purchase):
            paid[p.order_id] = (rfm.day_of(e.occurred_at), p.amount_minor)
        elif isinstance(p, Refund):
            refunded[p.order_id] += p.amount_minor
        elif isinstance(p, Chat) and p.direction == "inbound":
            engagements += 1
        elif isinstance(p, Share):
            engagements, shares = engagements + 1, shares + 1
            invitations += p.invitee is not None
    kept = {o: (d, a - min(refunded[o], a)) for o, (d, a) in paid.items() if refunded[o] < a}
    days = sorted({d for d, _ in kept.values()}, reverse=True)
    buckets: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for o, (d, _) in paid.items():
        buckets[d][0] += o in kept
        buckets[d][1] += kept[o][1] if o in kept else 0
    first_join = min(joins, key=lambda e: e.occurred_at) if joins else None
    return core.Aggregates(
        first_seen=min(e.occurred_at for e in events),
        last_seen=max(e.occurred_at for e in events),
        engagements=engagements,
        shares=shares,
        invitations=invitations,
        lifetime_orders=len(kept),
        lifetime_amount_minor=sum(a for _, a in kept.values()),
        first_purchase_day=min((d for d, _ in paid.values()), default=-1),
        last_purchase_day=days[0] if days else -1,
        previous_purchase_day=days[1] if len(days) > 1 else -1,
        buckets=tuple((d, n, a) for d, (n, a) in sorted(buckets.items())),
        last_join=max((e.occurred_at for e in joins), default=-1),
        last_leave=max((e.occurred_at for e in leaves), default=-1),
        acquired_at=first_join.occurred_at if first_join else -1,
        acquisition_channel=first_join.channel if first_join else None,
        acquisition_source="qr_code" if first_join else None,
    )


def _stream(arrivals: list[tuple[str, Touchpoint]], cutoff: int) -> PartitionEngine:
    engine = PartitionEngine(POLICY, {}, allowed_lateness_ms=LATENESS)
    for offset, (person, e) in enumerate(arrivals):
        engine.on_event(e, person, offset)
    engine.advance_to(cutoff + LATENESS)  # the watermark reaches the cut-off
    return engine


def _comparable(a: core.Aggregates, cutoff: int) -> core.Aggregates:
    """Bookkeeping the batch has no notion of dropped: order lists, empty/old buckets."""
    first = rfm.day_of(cutoff) - POLICY.rfm.window_days + 1
    buckets = tuple(b for b in a.buckets if b[0] >= first and (b[1] or b[2]))
    return replace(a, buckets=buckets, recent_orders=(), pending_refunds=())


def _assert_matches_batch(engine: PartitionEngine, events: list[tuple[str, Touchpoint]]) -> None:
    cutoff = max(e.occurred_at for _, e in events) + 400 * DAY  # time moves everyone on
    by_person: dict[str, list[Touchpoint]] = defaultdict(list)
    for person, e in events:
        by_person[person].append(e)
    assert len(engine.store) == len(by_person)
    for person, evs in by_person.items():
        s = engine.store[core.state_key("lumi", person).encode()]
        expected = _batch(evs)
        assert _comparable(s.agg, cutoff) == _comparable(expected, cutoff)
        assert s.derived == core.derive(expected, "lumi", cutoff, POLICY)
        assert core.next_due(s, "lumi", POLICY) is None or core.next_due(s, "lumi", POLICY) > cutoff  # type: ignore[operator]


@settings(max_examples=150, deadline=None)
@given(histories)
def test_the_stream_in_order_equals_the_batch_computation(
    events: list[tuple[str, Touchpoint]],
) -> None:
    cutoff = max(e.occurred_at for _, e in events) + 400 * DAY
    _assert_matches_batch(_stream(events, cutoff), events)


@settings(max_examples=150, deadline=None)
@given(histories, hs.randoms(use_true_random=False))
def test_out_of_order_arrival_within_the_lateness_gives_the_same_state(
    events: list[tuple[str, Touchpoint]], rnd: random.Random
) -> None:
    """Each event is delayed by less than the allowed lateness, so none is late."""
    shuffled = sorted(events, key=lambda pe: pe[1].occurred_at + rnd.randrange(LATENESS))
    cutoff = max(e.occurred_at for _, e in events) + 400 * DAY
    engine = PartitionEngine(POLICY, {}, allowed_lateness_ms=LATENESS)
    late = sum(engine.on_event(e, p, i).late for i, (p, e) in enumerate(shuffled))
    engine.advance_to(cutoff + LATENESS)
    assert late == 0
    _assert_matches_batch(engine, events)


@settings(max_examples=150, deadline=None)
@given(histories)
def test_a_persons_changes_do_not_depend_on_when_the_watermark_fires(
    events: list[tuple[str, Touchpoint]],
) -> None:
    """Per person, the engine's changes (any lateness) equal folding `apply` over that
    person's events alone and advancing to the cut-off: bit for bit, seq included."""
    cutoff = max(e.occurred_at for _, e in events) + 400 * DAY
    for lateness in (0, LATENESS):
        engine = PartitionEngine(POLICY, {}, allowed_lateness_ms=lateness)
        streamed: dict[str, list[core.SegmentChange]] = defaultdict(list)
        for offset, (person, e) in enumerate(events):
            for c in engine.on_event(e, person, offset).changes:
                streamed[c.person_id].append(c)
        for c in engine.advance_to(cutoff + lateness):
            streamed[c.person_id].append(c)
        for person in {p for p, _ in events}:
            s: core.PersonState | None = None
            alone: list[core.SegmentChange] = []
            for offset, (p, e) in enumerate(events):
                if p == person:
                    s, cs = core.apply(s, e, person, POLICY, offset)
                    alone += cs
            assert s is not None
            s, cs = core.advance(s, "lumi", person, cutoff, POLICY)
            alone += cs
            assert streamed[person] == alone
            assert [c.seq for c in alone] == list(range(1, len(alone) + 1))
            assert engine.store[core.state_key("lumi", person).encode()] == s


def test_a_customer_who_stops_buying_moves_on_time_alone_without_events_of_their_own() -> None:
    policy = replace(POLICY, rules=compile_rules({}))
    engine = PartitionEngine(policy, {}, allowed_lateness_ms=0)
    engine.on_event(_ev("buy", "pa", EventType.PURCHASE, Purchase("o1", 30_000), T0), "pa")
    moves: list[tuple[str, str | None, int]] = []
    for day in range(1, 301):  # someone else keeps the partition's clock moving
        out = engine.on_event(
            _ev(f"c{day}", "pb", EventType.CHAT, Chat("outbound", "bot"), T0 + day * DAY), "pb"
        )
        moves += [
            (c.dimension, c.to_value, (c.event_time - T0) // DAY)
            for c in out.changes
            if c.person_id == "pa" and c.dimension == "lifecycle"
        ]
        assert all(c.cause_event_id == core.TIME_CAUSE for c in out.changes)
    assert moves == [
        ("lifecycle", "active", 30),  # one order, 30 days on: no longer new
        ("lifecycle", "at_risk", 60),
        ("lifecycle", "dormant", 120),
        ("lifecycle", "churned", 240),
    ]
    # The purchase, then one write per due day: lifecycle moves and R thresholds (day 365,
    # when the order leaves the window, is beyond day 300).
    assert engine.store[b"lumi:pa"].version == 1 + len({30, 60, 120, 240} | {8, 31, 91, 181})


def test_stale_due_entries_are_skipped_when_an_event_moved_the_persons_due_time() -> None:
    policy = replace(POLICY, rules=compile_rules({}))
    engine = PartitionEngine(policy, {}, allowed_lateness_ms=0)
    engine.on_event(_ev("b1", "pa", EventType.PURCHASE, Purchase("o1", 30_000), T0), "pa")
    engine.on_event(_ev("b2", "pa", EventType.PURCHASE, Purchase("o2", 30_000), T0 + 5 * DAY), "pa")
    out = engine.on_event(
        _ev("x", "pb", EventType.CHAT, Chat("outbound", "bot"), T0 + 9 * DAY), "pb"
    )
    # The first purchase's R decay (day 8) was superseded by the second purchase.
    assert [c for c in out.changes if c.person_id == "pa"] == []
    assert engine.store[b"lumi:pa"].scores.r == 5


def test_events_that_leave_the_due_time_alone_add_no_index_entries_and_time_still_fires() -> None:
    policy = replace(POLICY, rules=compile_rules({}))
    engine = PartitionEngine(policy, {}, allowed_lateness_ms=0)
    engine.on_event(_ev("b1", "pa", EventType.PURCHASE, Purchase("o1", 30_000), T0), "pa")
    due = engine.store[b"lumi:pa"].due
    for i in range(10):  # the brand's own messages: nothing the clock depends on moves
        at = T0 + i * HOUR
        engine.on_event(_ev(f"m{i}", "pa", EventType.CHAT, Chat("outbound", "staff"), at), "pa")
    assert engine.store[b"lumi:pa"].due == due
    assert engine.backlog == 1
    out = engine.on_event(_ev("x", "pb", EventType.CHAT, Chat("outbound", "bot"), due), "pb")
    assert b"lumi:pa" in out.written  # the one entry fired: pa's state moved to its due time
    assert engine.store[b"lumi:pa"].as_of == due


def test_redelivered_offsets_and_duplicate_event_ids_are_reported_and_change_nothing() -> None:
    engine = PartitionEngine(POLICY, {}, allowed_lateness_ms=0)
    buy = _ev("b1", "pa", EventType.PURCHASE, Purchase("o1", 30_000), T0)
    first = engine.on_event(buy, "pa", offset=5)
    state = engine.store[b"lumi:pa"]
    again = engine.on_event(buy, "pa", offset=5)
    copy = engine.on_event(buy, "pa", offset=6)  # the producer sent it twice
    assert first.changes and not again.changes and not copy.changes
    assert (again.redelivered, copy.duplicate) == (True, True)
    assert engine.store[b"lumi:pa"] == state


def test_an_event_behind_the_watermark_is_applied_and_reported_late() -> None:
    engine = PartitionEngine(POLICY, {}, allowed_lateness_ms=HOUR)
    engine.on_event(_ev("a", "pa", EventType.CHAT, Chat("inbound", "customer"), T0 + DAY), "pa")
    out = engine.on_event(_ev("b", "pb", EventType.PURCHASE, Purchase("o", 9), T0), "pb")
    assert out.late
    assert engine.store[b"lumi:pb"].agg.lifetime_orders == 1


def test_the_index_rebuilt_from_stored_states_fires_the_same_changes() -> None:
    """What a restarted worker does: index the recovered table, then go on."""
    live = PartitionEngine(POLICY, {}, allowed_lateness_ms=0)
    live.on_event(_ev("b", "pa", EventType.PURCHASE, Purchase("o1", 30_000), T0), "pa")
    recovered = PartitionEngine(POLICY, dict(live.store), allowed_lateness_ms=0)
    recovered.index(recovered.store.items())
    assert recovered.backlog == 1
    later = T0 + 100 * DAY
    assert recovered.advance_to(later) == live.advance_to(later) != []


def test_a_brand_group_keeps_a_cross_brand_view_of_each_person() -> None:
    """Two purchases at two sister brands: each brand sees one order, the group two."""
    policy = replace(
        POLICY, rules=compile_rules({}), brand_groups={"lumi": ("house",), "mosu": ("house",)}
    )
    engine = PartitionEngine(policy, {}, allowed_lateness_ms=0)
    first = _ev("b1", "pa", EventType.PURCHASE, Purchase("o1", 30_000), T0)
    second = replace(
        _ev("b2", "pa", EventType.PURCHASE, Purchase("o2", 40_000), T0 + HOUR), brand="mosu"
    )
    engine.on_event(first, "pa", 0)
    out = engine.on_event(second, "pa", 1)
    store = engine.store
    assert store[b"lumi:pa"].agg.lifetime_orders == store[b"mosu:pa"].agg.lifetime_orders == 1
    house = store[b"house:pa"]
    assert (house.agg.lifetime_orders, house.agg.lifetime_amount_minor) == (2, 70_000)
    assert (house.rfm_segment, house.aipl_stage) == ("important_develop", "L")
    assert [(c.brand, c.dimension, c.to_value) for c in out.changes if c.brand == "house"] == [
        ("house", "rfm_segment", "important_develop"),
        ("house", "aipl_stage", "L"),
        ("house", "lifecycle", "active"),
    ]
    assert out.written == [b"mosu:pa", b"house:pa"]


def test_reassessing_under_new_thresholds_emits_changes_caused_by_the_policy() -> None:
    policy = replace(POLICY, rules=compile_rules({}))
    engine = PartitionEngine(policy, {}, allowed_lateness_ms=0)
    engine.on_event(_ev("b", "pa", EventType.PURCHASE, Purchase("o1", 30_000), T0), "pa")
    assert engine.store[b"lumi:pa"].rfm_segment == "general_develop"  # M2 < high
    engine.policy = replace(
        policy, brand_rfm={"lumi": rfm.RfmPolicy(monetary_minor=(100, 200, 300, 400))}
    )
    out = Outcome()
    engine.reassess([b"lumi:pa", b"lumi:nobody"], out)
    assert [(c.dimension, c.to_value, c.cause_event_id, c.scores_after.m) for c in out.changes] == [
        ("rfm_segment", "important_develop", "policy:v1", 5)
    ]
    assert out.written == [b"lumi:pa"]


def test_a_referred_first_purchase_credits_the_referrer_and_makes_a_koc() -> None:
    engine = PartitionEngine(POLICY, {}, allowed_lateness_ms=0)
    sharer = _ev("s0", "ps", EventType.SHARE, Share("c"), T0).user
    for i in range(3):
        engine.on_event(_ev(f"s{i}", "ps", EventType.SHARE, Share("c"), T0 + i), "ps")
    join = _ev("j", "pi", EventType.JOIN, Join("follow", "referral", sharer), T0 + HOUR)
    engine.on_event(join, "pi")
    late = _ev("j2", "pl", EventType.JOIN, Join("follow", "referral", sharer), T0 + HOUR)
    engine.on_event(late, "pl")
    buy = engine.on_event(_ev("b", "pi", EventType.PURCHASE, Purchase("o", 100), T0 + DAY), "pi")
    again = engine.on_event(
        _ev("b2", "pi", EventType.PURCHASE, Purchase("o2", 100), T0 + 2 * DAY), "pi"
    )
    too_late = engine.on_event(
        _ev("b3", "pl", EventType.PURCHASE, Purchase("o3", 100), T0 + 31 * DAY), "pl"
    )
    referrer = seed_of(sharer)
    assert buy.referrals == [("lumi", referrer, "pi", T0 + DAY)]
    assert again.referrals == [] and too_late.referrals == []

    # The credit, where the referrer's state lives (here: a state keyed by the seed id).
    engine.on_event(_ev("s9", "x", EventType.SHARE, Share("c"), T0), referrer)
    engine.store[f"lumi:{referrer}".encode()] = replace(
        engine.store[f"lumi:{referrer}".encode()],
        agg=replace(engine.store[f"lumi:{referrer}".encode()].agg, shares=3),
    )
    out = Outcome()
    engine.on_referral("lumi", referrer, "pi", T0 + DAY, out)
    koc = [c for c in out.changes if c.dimension == "tag" and c.to_value == "koc"]
    assert [(c.cause_event_id, c.event_time) for c in koc] == [("referral:pi", T0 + DAY)]
    replayed = Outcome()
    engine.on_referral("lumi", referrer, "pi", T0 + DAY, replayed)
    assert replayed.duplicate and replayed.changes == []


def test_people_due_at_the_same_time_fire_in_key_order_however_the_index_was_filled() -> None:
    """Due times fall on day boundaries and are shared: the index holds each time's keys.
    They fire in key order, the same for a live engine (filled as events came) and for
    one indexed from a recovered table in another order; stale entries are counted in the
    backlog until their time comes, then dropped."""
    live = PartitionEngine(POLICY, {}, allowed_lateness_ms=0)
    for person in ("pc", "pa", "pd", "pb"):  # same day, so the same due times
        buy = Purchase(f"o-{person}", 30_000)
        live.on_event(_ev(f"b-{person}", person, EventType.PURCHASE, buy, T0), person)
    assert len({s.due for s in live.store.values()}) == 1
    # pd buys again a day later: its first entry is stale, a second one is pushed
    live.on_event(_ev("b2", "pd", EventType.PURCHASE, Purchase("o2", 9), T0 + DAY), "pd")
    assert live.backlog == 5
    recovered = PartitionEngine(POLICY, dict(reversed(list(live.store.items()))), 0)
    recovered.index(recovered.store.items())
    assert recovered.backlog == 4  # one entry per person: none stale
    first_due = live.store[b"lumi:pa"].due
    fired = live.advance_to(T0 + 100 * DAY)
    assert fired == recovered.advance_to(T0 + 100 * DAY)
    by_time: dict[int, list[str]] = {}
    for c in fired:
        by_time.setdefault(c.event_time, []).append(c.person_id)
    assert len(by_time) > 1 and any(len(set(p)) > 1 for p in by_time.values())
    assert all(p == sorted(p) for p in by_time.values()), by_time
    # pd, due a day later than the others since its second purchase, moves a day later
    assert set(by_time[min(by_time)]) == {"pa", "pb", "pc"}
    assert first_due < min(by_time) and live.store[b"lumi:pd"].as_of > first_due
    assert live.backlog == recovered.backlog


class _Mapping(MutableMapping[bytes, core.PersonState]):
    """A store that is not a dict, as the worker's write-behind store is not."""

    def __init__(self) -> None:
        self.data: dict[bytes, core.PersonState] = {}

    def __getitem__(self, key: bytes) -> core.PersonState:
        return self.data[key]

    def __setitem__(self, key: bytes, value: core.PersonState) -> None:
        self.data[key] = value

    def __delitem__(self, key: bytes) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@settings(max_examples=50, deadline=None)
@given(histories)
def test_a_store_that_is_not_a_dict_holds_the_same_states_and_changes(
    events: list[tuple[str, Touchpoint]],
) -> None:
    """The engine reads and writes a plain dict in C (`_stored`, `_store`): any other
    mapping gets the same states and changes, through its own methods."""
    plain = PartitionEngine(POLICY, {}, LATENESS)
    other = PartitionEngine(POLICY, _Mapping(), LATENESS)
    cutoff = max(e.occurred_at for _, e in events) + 400 * DAY
    changes = [
        [c for i, (p, e) in enumerate(events) for c in engine.on_event(e, p, i).changes]
        for engine in (plain, other)
    ]
    assert changes[0] == changes[1]
    assert isinstance(other.store, _Mapping) and other.store.data == plain.store
    assert other.advance_to(cutoff) == plain.advance_to(cutoff)
