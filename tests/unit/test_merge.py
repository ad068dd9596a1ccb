"""Merging two people (identity resolution): folding two channel identities' states into
one gives the state of all their events together."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as hs

from pipeline import rfm
from pipeline import state as core
from pipeline.events import EventType, Purchase, Refund, Touchpoint
from tests.unit.test_engine import DAY, POLICY, T0, _comparable, _ev, histories


def _fold(events: list[Touchpoint], person: str) -> core.PersonState:
    s = core.PersonState()
    for e in events:
        s, _ = core.apply(s if s.version else None, e, person, POLICY)
    return s


@settings(max_examples=200, deadline=None)
@given(histories, hs.sets(hs.sampled_from(["pa", "pb", "pc"]), min_size=1))
def test_merging_two_views_equals_the_state_of_all_their_events(
    events: list[tuple[str, Touchpoint]], left: set[str]
) -> None:
    """Events of "person" pa/pb/pc are split in two identities by who sent them; one
    person's state from all the events equals the merge of the two identities' states.

    Up to the bound on recent orders: a state keeps its last 8 orders for refunds to find,
    so with more orders in all, a refund may find its order in one identity's state and
    not in the state of all the events (an older order's refund reduces M only)."""
    orders = sum(isinstance(e.payload, Purchase) for _, e in events)
    assume(orders <= core.RECENT_ORDERS_KEPT)
    a = [e for p, e in events if p in left]
    b = [e for p, e in events if p not in left]
    together = _fold([e for _, e in events], "p")
    merged, changes = core.merge(_fold(a, "p"), _fold(b, "p2"), "lumi", "p", "p2", POLICY)
    cutoff = together.as_of
    assert _comparable(merged.agg, cutoff) == _comparable(together.agg, cutoff)
    assert merged.as_of == together.as_of
    assert merged.derived == together.derived
    if b:
        assert changes[-1].dimension == "identity"
        assert (changes[-1].from_value, changes[-1].to_value) == ("p2", "p")
        assert [c.seq for c in changes] == list(
            range(changes[0].seq, changes[0].seq + len(changes))
        )


def test_a_refund_seen_on_one_channel_finds_its_order_from_the_other() -> None:
    store = _fold([_ev("b", "pa", EventType.PURCHASE, Purchase("o1", 30_000), T0)], "p")
    app = _fold([_ev("r", "pb", EventType.REFUND, Refund("o1", 30_000), T0 + DAY)], "p2")
    assert app.agg.pending_refunds == (("o1", 30_000),)
    merged, changes = core.merge(store, app, "lumi", "p", "p2", POLICY)
    assert merged.agg.lifetime_orders == 0 and merged.agg.pending_refunds == ()
    assert merged.rfm_segment is None and merged.lifecycle is None
    assert [c.dimension for c in changes][-1] == "identity"
    assert rfm.day_of(merged.as_of) == rfm.day_of(T0 + DAY)
