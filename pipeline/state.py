"""Per-person state and its transitions. Pure: no I/O, no wall clock.

    state, changes = apply(state, event, person_id, policy)   # an event happened
    state, changes = advance(state, brand, person_id, now, policy)  # time passed
    due = next_due(state, brand, policy)                      # when time next matters

A state belongs to one (brand, person) and has three parts:
- `Aggregates`: what the person did, kept as order-independent sums, mins and maxes
  (so events arriving out of order give the same aggregates);
- `Derived`: RFM scores and segment, AIPL stage, lifecycle, tags and layers — a pure
  function of the aggregates, the brand's rules and the clock (`derive`);
- bookkeeping: `as_of` (the person's clock), `version`, `seq`, `last_offset`, and the
  recent event ids used to drop duplicates.

Every change of a derived value becomes one `SegmentChange` with the next per-person
sequence number. Changes caused by time carry `cause_event_id == "time"` and the due time
as `event_time`. Time only matters on whole days (scores, windows and lifecycle count
days), so `next_due` is the start of the next day on which something may change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any

try:
    import cython
except ImportError:  # not installed (a runtime without the build's tools): plain Python
    from pipeline import _no_cython as cython

from pipeline import lifecycle as lc
from pipeline import rfm, rules, stages
from pipeline.events import Chat, EventType, Join, Leave, Purchase, Refund, Share, Touchpoint
from pipeline.frozen import fast_init
from pipeline.identity import seed_of
from pipeline.rfm import RfmPolicy
from pipeline.rules import BrandRules

# Refunds look up the order they undo among the customer's most recent orders only,
# which keeps state bounded; an older order's refund still reduces M, not F.
RECENT_ORDERS_KEPT = 8
# Refunds that arrive before their order wait here (bounded) for it.
PENDING_REFUNDS_KEPT = 4

TIME_CAUSE = "time"  # cause_event_id of changes caused by the clock, not by an event
DUE_UNKNOWN = -2  # PersonState.due not computed yet (e.g. decoded from the changelog)
DUE_NEVER = -1  # nothing will change on time alone
# The same, as C constants when compiled (state.pxd): compared with a C field, a module's
# Python constant would box the field into an int object first.
_DUE_UNKNOWN, _DUE_NEVER = DUE_UNKNOWN, DUE_NEVER
_MS_PER_DAY = rfm.MS_PER_DAY  # likewise: `rfm.MS_PER_DAY` is a module attribute lookup

OrderRef = tuple[str, int, int]  # (order_id, day, amount_minor)
PendingRefund = tuple[str, int]  # (order_id, amount_minor)
LayerValue = tuple[str, str]  # (layer, level)
Source = tuple[int, int]  # (events partition, offset) an event was forwarded from


def _no_rules() -> rules.RuleBook:
    return rules.compile_rules(None)


# The default factories below name no module: compiled, a field's name (`rfm`, `rules`)
# would shadow the module of the same name in the class body (Cython 3.3).
@dataclass(frozen=True, slots=True)
class Policy:
    """Everything that decides segments; one per deployment, versioned for rebuilds."""

    rfm: rfm.RfmPolicy = field(default_factory=RfmPolicy)
    aipl: stages.AiplPolicy = field(default_factory=stages.AiplPolicy)
    lifecycle: lc.LifecyclePolicy = field(default_factory=lc.LifecyclePolicy)
    rules: rules.RuleBook = field(default_factory=_no_rules)
    # dicts, not any mapping: compiled, a brand's lookup is then a C call (state.pxd)
    brand_rfm: dict[str, RfmPolicy] = field(default_factory=dict)
    dedup_window: int = 16  # recent event ids kept per person to drop repeats
    version: str = "v1"
    # A referred person's first purchase within this many days of joining converts them:
    # their referrer's `converted_invitees` grows (the KOC rule's fact).
    referral_window_days: int = 30
    # brand -> the brand groups it belongs to; a group keeps its own (brand = group
    # name) state of every person across its brands: the cross-brand view.
    brand_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # brand -> its rules (`rules_for`), kept as brands are met: no part of the value
    _rules_by_brand: dict[str, BrandRules] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    # brand -> what the core reads of its policy (`core_for`), kept likewise
    _cores: dict[str, BrandCore] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    # the brand `core_for` was asked last, and its answer (compiled only)
    _last_brand: Any = field(default=None, init=False, repr=False, compare=False, hash=False)
    _last_core: Any = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.dedup_window < 1:
            raise ValueError(f"dedup_window must be >= 1, got {self.dedup_window}")

    def groups_of(self, brand: str) -> tuple[str, ...]:
        return self.brand_groups.get(brand, ())

    def rfm_for(self, brand: str) -> RfmPolicy:
        if not self.brand_rfm:  # most deployments: no brand of its own, and no lookup
            return self.rfm
        return self.brand_rfm.get(brand, self.rfm)

    def rules_for(self, brand: str) -> BrandRules:
        """`self.rules.for_brand(brand)`, kept per brand: the core asks up to three times
        per event, and compiled, this is one C lookup where reading the rule book's
        fields goes through Python's attribute lookup (~2 % of the core's work)."""
        found = self._rules_by_brand.get(brand)
        if found is None:
            found = self.rules.for_brand(brand)
            self._rules_by_brand[brand] = found
        return found

    def core_for(self, brand: str) -> BrandCore:
        """What `derive` and `compute_due` read of the brand's policy, built once.
        Compiled, the brand asked last is answered without the lookup: the core asks for
        one event's brand up to four times, as the same string object."""
        if cython.compiled and brand is self._last_brand:
            last: BrandCore = self._last_core
            return last
        found = self._cores.get(brand)
        if found is None:
            book = self.rules_for(brand)
            found = BrandCore(
                self.rfm_for(brand),
                book,
                book.compiled,
                fact_bits(book.facts_used),
                book.day_thresholds,
            )
            self._cores[brand] = found
        if cython.compiled:  # C fields, out of the frozen dataclass's Python view
            self._last_brand = brand  # type: ignore[misc]
            self._last_core = found  # type: ignore[misc]
        return found


@dataclass(frozen=True, slots=True)
class BrandCore:
    """A brand's RFM policy and rules as the core reads them on every event (`Policy.
    core_for`). Compiled, its fields are C reads: each read of the rule book's own fields
    was an attribute lookup through Python, and its set of facts a method call."""

    rfm: RfmPolicy
    rules: BrandRules
    evaluate: Any  # the rules as one function (`rules.compiled`); None: by their predicates
    reads: int  # the facts the rules read, as bits (`fact_bits`): all when not known
    day_thresholds: Mapping[str, frozenset[int]]  # `rules.day_thresholds`


@fast_init
@dataclass(frozen=True, slots=True)
class Scores:
    """The R, F, M scores a change was decided on (0 where the person never bought)."""

    r: int = 0
    f: int = 0
    m: int = 0


NO_SCORES = Scores()


@fast_init
@dataclass(frozen=True, slots=True)
class Aggregates:
    """What a person did with a brand, as order-independent aggregates."""

    first_seen: int = 0  # ms, earliest event time
    last_seen: int = 0  # ms, latest event time
    engagements: int = 0  # inbound chats and shares
    shares: int = 0
    invitations: int = 0  # shares that named an invitee
    lifetime_orders: int = 0  # less wholly refunded orders
    lifetime_amount_minor: int = 0  # less refunds
    first_purchase_day: int = -1
    last_purchase_day: int = -1
    previous_purchase_day: int = -1  # latest purchase day before last_purchase_day
    buckets: tuple[rfm.Bucket, ...] = ()
    recent_orders: tuple[OrderRef, ...] = ()  # sorted by (day, order_id)
    pending_refunds: tuple[PendingRefund, ...] = ()
    last_join: int = -1  # ms of the latest join, -1 none
    last_leave: int = -1  # ms of the latest leave, -1 none
    acquired_at: int = -1  # ms of the earliest join, -1 none
    acquisition_channel: str | None = None
    acquisition_source: str | None = None
    referred_by: str | None = None  # person id of the referrer of the earliest referred join
    referred_at: int = -1  # ms of that join
    converted_invitees: int = 0  # people this person referred who bought in the window

    def purchase_history(self) -> lc.PurchaseHistory | None:
        if self.lifetime_orders <= 0 or self.last_purchase_day < 0:
            return None
        if cython.compiled:  # filled in C (the core asks up to three times per event)
            h = lc.PurchaseHistory.__new__(lc.PurchaseHistory)
            h.orders = self.lifetime_orders
            h.first_day = self.first_purchase_day
            h.last_day = self.last_purchase_day
            h.previous_day = self.previous_purchase_day
            return h
        return lc.PurchaseHistory(
            self.lifetime_orders,
            self.first_purchase_day,
            self.last_purchase_day,
            self.previous_purchase_day,
        )

    @property
    def subscribed(self) -> bool | None:
        """Following / friends / in the group now; None when no join or leave was seen."""
        return _subscribed(self)


def _subscribed(a: Aggregates) -> bool | None:
    """`Aggregates.subscribed`; the core calls this: compiled, a C call, where reading the
    property goes through Python's attribute lookup."""
    if a.last_join < 0 and a.last_leave < 0:
        return None
    return a.last_join > a.last_leave


@fast_init
@dataclass(frozen=True, slots=True)
class Derived:
    """The person's segments: a pure function of aggregates, rules and the clock."""

    scores: Scores = NO_SCORES
    rfm_segment: str | None = None
    aipl_stage: str = stages.AiplStage.AWARENESS.value
    lifecycle: str | None = None
    tags: tuple[str, ...] = ()  # sorted
    layers: tuple[LayerValue, ...] = ()  # in the rules' layer order
    # Cache of the RFM window's totals these were derived on (None: no purchase, or not
    # known, e.g. decoded): a state carried forward keeps its window as it keeps its
    # scores (`derive`). Not part of the value, never serialized. (`hash=False` is what
    # `compare=False` implies; Cython's dataclass needs it said: docs/compiled-core.md.)
    window: rfm.Window | None = field(default=None, compare=False, hash=False)


@fast_init
@dataclass(frozen=True, slots=True)
class PersonState:
    version: int = 0  # state writes (events and due times applied); orders rows in the store
    seq: int = 0  # sequence number of the last segment change emitted
    last_offset: int = -1  # source offset of the last applied event (redelivery guard)
    as_of: int = 0  # ms, the person's clock: derived values hold as of this time
    recent_event_ids: tuple[str, ...] = ()  # for dropping duplicate deliveries
    agg: Aggregates = Aggregates()
    derived: Derived = Derived()
    # With identity resolution: (events partition, offset of the last event applied from
    # it), sorted by partition. Events reach the state forwarded by the resolver, which
    # forwards again what it had not committed when a worker died; a copy is recognised
    # by its origin here (`is_forwarded_again`), whatever the person's recent ids hold.
    source_offsets: tuple[tuple[int, int], ...] = ()
    # Cache of `next_due` (a pure function of agg, as_of and the policy), filled in when
    # the state is derived; not part of the state's value, never serialized.
    due: int = field(default=DUE_UNKNOWN, compare=False, hash=False)

    # Shorthands used by adapters and tests.
    @property
    def scores(self) -> Scores:
        return self.derived.scores

    @property
    def rfm_segment(self) -> str | None:
        return self.derived.rfm_segment

    @property
    def aipl_stage(self) -> str:
        return self.derived.aipl_stage

    @property
    def lifecycle(self) -> str | None:
        return self.derived.lifecycle

    @property
    def tags(self) -> tuple[str, ...]:
        return self.derived.tags


@fast_init
@dataclass(frozen=True, slots=True)
class SegmentChange:
    brand: str
    person_id: str
    dimension: str  # rfm_segment | aipl_stage | lifecycle | tag | layer:<name>
    from_value: str | None
    to_value: str | None
    rule: str  # why: the rule that decided `to_value` (or removed `from_value`)
    cause_event_id: str  # the event that caused it, or TIME_CAUSE
    event_time: int  # ms: the cause's event time, or the due time
    seq: int
    scores_before: Scores
    scores_after: Scores
    policy_version: str = ""


# -- the value classes built per event, in C when compiled --------------------------------
#
# Compiled, calling a class goes through Python (its arguments boxed into objects, then
# parsed and unboxed by its __init__); these fill a new object's C fields directly. Each
# takes every field, in order (tests/unit/test_state.py checks it).


def _new_scores(r: int, f: int, m: int) -> Scores:
    """`Scores(r, f, m)`."""
    if cython.compiled:
        n = Scores.__new__(Scores)
        n.r = r
        n.f = f
        n.m = m
        return n
    return Scores(r, f, m)


def _new_derived(
    scores: Scores,
    rfm_segment: str | None,
    aipl_stage: str,
    lifecycle: str | None,
    tags: tuple[str, ...],
    layers: tuple[LayerValue, ...],
    window: rfm.Window | None,
) -> Derived:
    """`Derived(...)`, every field."""
    if cython.compiled:
        n = Derived.__new__(Derived)
        n.scores = scores
        n.rfm_segment = rfm_segment
        n.aipl_stage = aipl_stage
        n.lifecycle = lifecycle
        n.tags = tags
        n.layers = layers
        n.window = window
        return n
    return Derived(scores, rfm_segment, aipl_stage, lifecycle, tags, layers, window)


def _new_state(
    version: int,
    seq: int,
    last_offset: int,
    as_of: int,
    recent_event_ids: tuple[str, ...],
    agg: Aggregates,
    derived: Derived,
    source_offsets: tuple[Source, ...],
    due: int,
) -> PersonState:
    """`PersonState(...)`, every field."""
    if cython.compiled:
        n = PersonState.__new__(PersonState)
        n.version = version
        n.seq = seq
        n.last_offset = last_offset
        n.as_of = as_of
        n.recent_event_ids = recent_event_ids
        n.agg = agg
        n.derived = derived
        n.source_offsets = source_offsets
        n.due = due
        return n
    return PersonState(
        version, seq, last_offset, as_of, recent_event_ids, agg, derived, source_offsets, due
    )


def _new_change(
    brand: str,
    person_id: str,
    dimension: str,
    from_value: str | None,
    to_value: str | None,
    rule: str,
    cause_event_id: str,
    event_time: int,
    seq: int,
    scores_before: Scores,
    scores_after: Scores,
    policy_version: str,
) -> SegmentChange:
    """`SegmentChange(...)`, every field."""
    if cython.compiled:
        n = SegmentChange.__new__(SegmentChange)
        n.brand = brand
        n.person_id = person_id
        n.dimension = dimension
        n.from_value = from_value
        n.to_value = to_value
        n.rule = rule
        n.cause_event_id = cause_event_id
        n.event_time = event_time
        n.seq = seq
        n.scores_before = scores_before
        n.scores_after = scores_after
        n.policy_version = policy_version
        return n
    return SegmentChange(
        brand,
        person_id,
        dimension,
        from_value,
        to_value,
        rule,
        cause_event_id,
        event_time,
        seq,
        scores_before,
        scores_after,
        policy_version,
    )


# -- events -> aggregates (one function per event type) -------------------------------------
#
# An event's effect makes one new Aggregates: it takes a draft of the person's (`_draft`),
# sets what the event moved, and seals it (`_sealed`). Compiled, the draft is the new
# Aggregates itself, its C fields copied and set in C (no keyword call, no int boxed);
# uncompiled, it is a mutable `_Draft` the seal turns into an Aggregates.


class _Draft:
    """The uncompiled build's draft of a new Aggregates: the same fields, settable. Every
    field, in order (tests/unit/test_state.py checks it)."""

    __slots__ = (  # noqa: RUF023 - in field order
        "first_seen",
        "last_seen",
        "engagements",
        "shares",
        "invitations",
        "lifetime_orders",
        "lifetime_amount_minor",
        "first_purchase_day",
        "last_purchase_day",
        "previous_purchase_day",
        "buckets",
        "recent_orders",
        "pending_refunds",
        "last_join",
        "last_leave",
        "acquired_at",
        "acquisition_channel",
        "acquisition_source",
        "referred_by",
        "referred_at",
        "converted_invitees",
    )

    first_seen: int
    last_seen: int
    engagements: int
    shares: int
    invitations: int
    lifetime_orders: int
    lifetime_amount_minor: int
    first_purchase_day: int
    last_purchase_day: int
    previous_purchase_day: int
    buckets: tuple[rfm.Bucket, ...]
    recent_orders: tuple[OrderRef, ...]
    pending_refunds: tuple[PendingRefund, ...]
    last_join: int
    last_leave: int
    acquired_at: int
    acquisition_channel: str | None
    acquisition_source: str | None
    referred_by: str | None
    referred_at: int
    converted_invitees: int

    def __init__(self, a: Aggregates) -> None:
        self.first_seen = a.first_seen
        self.last_seen = a.last_seen
        self.engagements = a.engagements
        self.shares = a.shares
        self.invitations = a.invitations
        self.lifetime_orders = a.lifetime_orders
        self.lifetime_amount_minor = a.lifetime_amount_minor
        self.first_purchase_day = a.first_purchase_day
        self.last_purchase_day = a.last_purchase_day
        self.previous_purchase_day = a.previous_purchase_day
        self.buckets = a.buckets
        self.recent_orders = a.recent_orders
        self.pending_refunds = a.pending_refunds
        self.last_join = a.last_join
        self.last_leave = a.last_leave
        self.acquired_at = a.acquired_at
        self.acquisition_channel = a.acquisition_channel
        self.acquisition_source = a.acquisition_source
        self.referred_by = a.referred_by
        self.referred_at = a.referred_at
        self.converted_invitees = a.converted_invitees


def _draft(a: Aggregates) -> _Draft:
    """A new, not yet shared copy of `a` for an effect to set fields of; `_sealed` ends it."""
    if cython.compiled:  # mypy reads only the uncompiled branch (pyproject: always_false)
        n = Aggregates.__new__(Aggregates)  # no __init__: every field is set below
        n.first_seen = a.first_seen
        n.last_seen = a.last_seen
        n.engagements = a.engagements
        n.shares = a.shares
        n.invitations = a.invitations
        n.lifetime_orders = a.lifetime_orders
        n.lifetime_amount_minor = a.lifetime_amount_minor
        n.first_purchase_day = a.first_purchase_day
        n.last_purchase_day = a.last_purchase_day
        n.previous_purchase_day = a.previous_purchase_day
        n.buckets = a.buckets
        n.recent_orders = a.recent_orders
        n.pending_refunds = a.pending_refunds
        n.last_join = a.last_join
        n.last_leave = a.last_leave
        n.acquired_at = a.acquired_at
        n.acquisition_channel = a.acquisition_channel
        n.acquisition_source = a.acquisition_source
        n.referred_by = a.referred_by
        n.referred_at = a.referred_at
        n.converted_invitees = a.converted_invitees
        return n
    return _Draft(a)


def _sealed(d: _Draft) -> Aggregates:
    """The Aggregates a draft became (compiled: the draft itself, never changed again)."""
    if cython.compiled:
        return d
    return Aggregates(
        d.first_seen,
        d.last_seen,
        d.engagements,
        d.shares,
        d.invitations,
        d.lifetime_orders,
        d.lifetime_amount_minor,
        d.first_purchase_day,
        d.last_purchase_day,
        d.previous_purchase_day,
        d.buckets,
        d.recent_orders,
        d.pending_refunds,
        d.last_join,
        d.last_leave,
        d.acquired_at,
        d.acquisition_channel,
        d.acquisition_source,
        d.referred_by,
        d.referred_at,
        d.converted_invitees,
    )


def _top_two_days(days: set[int]) -> tuple[int, int]:
    ordered = sorted(days, reverse=True)
    return (ordered[0] if ordered else -1, ordered[1] if len(ordered) > 1 else -1)


def _seen_at(a: Aggregates, t: int) -> _Draft:
    """A draft of `a` with event time `t` taken into the first/last-seen times: what every
    event does, and where each effect starts (one new Aggregates per event)."""
    n = _draft(a)
    n.first_seen = min(a.first_seen, t)
    n.last_seen = max(a.last_seen, t)
    return n


_BY_DAY_AND_ID = itemgetter(1, 0)  # an OrderRef's (day, order_id)


def _add_order(a: Aggregates, order_id: str, t: int, amount: int) -> Aggregates:
    day = rfm.day_of(t)
    # the two latest distinct purchase days with `day` taken in (last > previous, -1: none)
    last, previous = a.last_purchase_day, a.previous_purchase_day
    if day > last:
        last, previous = day, last
    elif previous < day < last:
        previous = day
    # kept sorted by (day, order id); a new order is nearly always the latest: no sort then
    recent = a.recent_orders
    if recent:  # (day, order id) compared part by part: no two tuples built per purchase
        latest_id, latest_day, _ = recent[-1]
        in_order = latest_day < day or (latest_day == day and latest_id <= order_id)
    else:
        in_order = True
    if in_order:
        orders = (*recent, (order_id, day, amount))
    else:
        orders = tuple(sorted((*recent, (order_id, day, amount)), key=_BY_DAY_AND_ID))
    n = _seen_at(a, t)
    n.lifetime_orders = a.lifetime_orders + 1
    n.lifetime_amount_minor = a.lifetime_amount_minor + amount
    n.first_purchase_day = day if a.first_purchase_day < 0 else min(a.first_purchase_day, day)
    n.last_purchase_day = last
    n.previous_purchase_day = previous
    n.buckets = rfm.add_purchase(a.buckets, day, 1, amount)
    n.recent_orders = orders[-RECENT_ORDERS_KEPT:]
    return _sealed(n)


def _take_refund(a: Aggregates, order_id: str, amount: int) -> Aggregates | None:
    """The aggregates with a refund applied to its order, or None if the order is unknown."""
    for i, (oid, day, paid) in enumerate(a.recent_orders):
        if oid != order_id:
            continue
        refunded = min(amount, paid)
        whole = refunded >= paid
        remaining = () if whole else ((oid, day, paid - refunded),)
        orders = (*a.recent_orders[:i], *remaining, *a.recent_orders[i + 1 :])
        n = _draft(a)
        n.lifetime_orders = a.lifetime_orders - (1 if whole else 0)
        n.lifetime_amount_minor = a.lifetime_amount_minor - refunded
        n.buckets = rfm.add_purchase(a.buckets, day, -1 if whole else 0, -refunded)
        n.recent_orders = orders
        if whole:  # the order no longer counts: purchase days come from what is left
            days = {d for _, d, _ in orders} | {d for d, k, _ in n.buckets if k > 0}
            if n.lifetime_orders > len(orders):  # older orders exist beyond those kept
                days |= {a.previous_purchase_day} - {-1}
            last, previous = _top_two_days(days)
            n.last_purchase_day = last if n.lifetime_orders > 0 else -1
            n.previous_purchase_day = previous if n.lifetime_orders > 0 else -1
        return _sealed(n)
    return None


def _on_purchase(a: Aggregates, e: Touchpoint) -> Aggregates:
    p = e.payload
    assert isinstance(p, Purchase)
    a = _add_order(a, p.order_id, e.occurred_at, p.amount_minor)
    if not a.pending_refunds:  # nearly always: no list built to find none
        return a
    early = [amount for oid, amount in a.pending_refunds if oid == p.order_id]
    if early:  # refunds that arrived before their order
        n = _draft(a)
        n.pending_refunds = tuple([r for r in a.pending_refunds if r[0] != p.order_id])
        a = _sealed(n)
        for amount in early:
            a = _take_refund(a, p.order_id, amount) or a
    return a


def _on_refund(a: Aggregates, e: Touchpoint) -> Aggregates:
    p = e.payload
    assert isinstance(p, Refund)
    a = _on_other(a, e)
    refunded = _take_refund(a, p.order_id, p.amount_minor)
    if refunded is not None:
        return refunded
    return _with_pending_refund(a, p.order_id, p.amount_minor)


def _with_pending_refund(a: Aggregates, order_id: str, amount: int) -> Aggregates:
    """`a` with a refund of an order it does not know waiting for that order (bounded)."""
    n = _draft(a)
    n.pending_refunds = (*a.pending_refunds, (order_id, amount))[-PENDING_REFUNDS_KEPT:]
    return _sealed(n)


def _on_chat(a: Aggregates, e: Touchpoint) -> Aggregates:
    p = e.payload
    assert isinstance(p, Chat)
    if p.direction != "inbound":
        return _on_other(a, e)  # a brand's own message says nothing of the customer's interest
    t = e.occurred_at
    n = _seen_at(a, t)
    n.engagements = a.engagements + 1
    return _sealed(n)


def _on_share(a: Aggregates, e: Touchpoint) -> Aggregates:
    p = e.payload
    assert isinstance(p, Share)
    t = e.occurred_at
    n = _seen_at(a, t)
    n.engagements = a.engagements + 1
    n.shares = a.shares + 1
    n.invitations = a.invitations + (1 if p.invitee is not None else 0)
    return _sealed(n)


def _on_join(a: Aggregates, e: Touchpoint) -> Aggregates:
    p = e.payload
    assert isinstance(p, Join)
    t = e.occurred_at
    n = _seen_at(a, t)
    n.last_join = max(a.last_join, t)
    if p.referrer is not None and (a.referred_at < 0 or t < a.referred_at):
        n.referred_by, n.referred_at = seed_of(p.referrer), t
    if a.acquired_at < 0 or t < a.acquired_at:  # the earliest join acquired them
        n.acquired_at, n.acquisition_channel, n.acquisition_source = t, e.channel, p.source
    return _sealed(n)


def _on_leave(a: Aggregates, e: Touchpoint) -> Aggregates:
    assert isinstance(e.payload, Leave)
    t = e.occurred_at
    n = _seen_at(a, t)
    n.last_leave = max(a.last_leave, t)
    return _sealed(n)


def _on_other(a: Aggregates, e: Touchpoint) -> Aggregates:
    """Any event moves the first/last-seen times (no new object when they stay)."""
    t = e.occurred_at
    if a.first_seen <= t <= a.last_seen:
        return a
    n = _seen_at(a, t)
    return _sealed(n)


_CHAT, _PURCHASE, _JOIN = EventType.CHAT, EventType.PURCHASE, EventType.JOIN
_SHARE, _LEAVE, _REFUND = EventType.SHARE, EventType.LEAVE, EventType.REFUND


def _effect(a: Aggregates, e: Touchpoint) -> Aggregates:
    """The aggregates after event `e`. Types not listed (identify) only move the clock and
    the first/last-seen times. Branches, not a dict of functions: compiled, each effect is
    then a C call, where a function taken from a dict is called as Python."""
    kind = e.type
    if kind == _CHAT:
        return _on_chat(a, e)
    if kind == _PURCHASE:
        return _on_purchase(a, e)
    if kind == _JOIN:
        return _on_join(a, e)
    if kind == _SHARE:
        return _on_share(a, e)
    if kind == _LEAVE:
        return _on_leave(a, e)
    if kind == _REFUND:
        return _on_refund(a, e)
    return _on_other(a, e)


# -- aggregates + clock -> derived ---------------------------------------------------------


# An enum member's `.value` is a property written in Python (~80 ns); a dict is not.
_SEGMENT_VALUE: dict[rfm.RfmSegment, str] = {m: m.value for m in rfm.RfmSegment}
_LIFECYCLE_VALUE: dict[lc.Lifecycle, str] = {m: m.value for m in lc.Lifecycle}
_AIPL_VALUE: dict[stages.AiplStage, str] = {m: m.value for m in stages.AiplStage}


def derive(
    a: Aggregates,
    brand: str,
    now: int,
    policy: Policy,
    scored: Derived | None = None,
    changed: int = 0,
    prior: Derived | None = None,
) -> Derived:
    """Segments of a person with aggregates `a` at time `now` (ms).

    Shortcuts for a state carried forward (the caller checked that they apply):
    `scored`, a Derived whose RFM scores, segment and lifecycle still hold for `a` at
    `now` (`_same_scoring_inputs`, no due time passed): they are taken from it, and so is
    its RFM window's totals when it has them (the buckets are the same and none left the
    window: that would have been a due time); and
    `changed`, the only facts that differ from those `scored` was derived on (as bits,
    `fact_bits`): when the rules read none of them (nor a changed AIPL stage), `scored`'s
    tags and layers hold.

    And for a time step (a due time passed, the aggregates the same but for buckets that
    left the window): `prior`, what they were derived on before. RFM, the stage and the
    lifecycle are derived again; when the rules read none of what time moved
    (`_moved_in_time`), `prior`'s tags and layers hold."""
    today = rfm.day_of(now)
    bc = policy.core_for(brand)
    window = None
    if scored is not None:
        # carried forward: same buckets, no due time (a bucket leaving is one) since
        if a.lifetime_orders > 0 and a.last_purchase_day >= 0:  # a purchase history
            window = scored.window
            if window is None:
                window = rfm.window(a.buckets, today, bc.rfm)
        scores, segment, life = scored.scores, scored.rfm_segment, scored.lifecycle
    else:
        rp = bc.rfm
        history = a.purchase_history()
        scores, segment = NO_SCORES, None
        if history is not None:
            window = rfm.window(a.buckets, today, rp)
            rs = rfm.score_window(window, a.last_purchase_day, today, rp)
            scores = _new_scores(rs.r, rs.f, rs.m)
            segment = _SEGMENT_VALUE[rfm.segment(rs, rp)]
        stage_of_life = lc.lifecycle(history, today, policy.lifecycle)
        life = _LIFECYCLE_VALUE[stage_of_life] if stage_of_life else None
    window_orders = window.orders if window else 0
    stage = _AIPL_VALUE[
        stages.aipl_stage(a.engagements, a.lifetime_orders, window_orders, policy.aipl)
    ]
    reads = bc.reads
    if scored is not None and changed != 0:
        same_stage = scored.aipl_stage == stage
        if not same_stage:
            changed |= _AIPL_STAGE_BIT
        if reads & changed == 0:
            if same_stage and window is scored.window:
                return scored  # nothing it holds moved: the same object (no new one, no diff)
            return _new_derived(scores, segment, stage, life, scored.tags, scored.layers, window)
    if prior is not None and (
        reads & _moved_in_time(prior, scores, segment, stage, life, window) == 0
    ):
        return _new_derived(scores, segment, stage, life, prior.tags, prior.layers, window)
    generated = bc.evaluate  # the rules as one function of what is here (rules.py)
    if generated is not None:
        tags, layers = generated(a, scores, segment, stage, life, today, window)
    else:  # rules built by hand, without it: by their predicates
        facts = rules.facts_of(a, scores, segment, stage, life, today, window)
        tags, layers = bc.rules.evaluate(facts)
    return _new_derived(scores, segment, stage, life, tags, layers, window)


# The facts time alone moves, bits 0 to 9 of `fact_bits` in this order (tests/unit/
# test_carried_state.py checks that every other fact reads only what a time step leaves
# alone).
_TIME_FACTS = (
    "days_since_last_purchase",
    "days_since_first_seen",
    "r",
    "f",
    "m",
    "rfm_segment",
    "aipl_stage",
    "lifecycle",
    "window_orders",
    "window_amount_minor",
)


def _moved_in_time(
    prior: Derived,
    scores: Scores,
    segment: str | None,
    stage: str,
    life: str | None,
    window: rfm.Window | None,
) -> int:
    """Which of `_TIME_FACTS` may differ between `prior` and these values derived later on
    the same aggregates, as bits (`fact_bits`). The day counters always (a due time is a
    later day); the window's totals when `prior`'s are not known (decoded) and there is a
    window now."""
    moved = 3
    p = prior.scores
    if p.r != scores.r:
        moved |= 4
    if p.f != scores.f:
        moved |= 8
    if p.m != scores.m:
        moved |= 16
    if prior.rfm_segment != segment:
        moved |= 32
    if prior.aipl_stage != stage:
        moved |= 64
    if prior.lifecycle != life:
        moved |= 128
    w = prior.window
    if w is not window:
        if w is None or window is None:
            moved |= 256 | 512
        else:
            if w.orders != window.orders:
                moved |= 256
            if w.amount_minor != window.amount_minor:
                moved |= 512
    return moved


def _same_scoring_inputs(a: Aggregates, b: Aggregates) -> bool:
    """Whether RFM, the lifecycle and the due times read the same of `a` as of `b`: the
    fields they read (and the lifetime amount, a fact that only moves with them) and the
    day of `first_seen`. With `_OTHER_FACTS`, everything `derive` reads
    (tests/unit/test_carried_state.py checks it). Field by field, not an attrgetter's
    tuple: compiled, these are C comparisons (docs/compiled-core.md)."""
    return (
        rfm.day_of(a.first_seen) == rfm.day_of(b.first_seen)
        and a.lifetime_orders == b.lifetime_orders
        and a.lifetime_amount_minor == b.lifetime_amount_minor
        and a.first_purchase_day == b.first_purchase_day
        and a.last_purchase_day == b.last_purchase_day
        and a.previous_purchase_day == b.previous_purchase_day
        and (a.buckets is b.buckets or a.buckets == b.buckets)  # a tuple's == walks it
    )


# The rest of what `derive` reads: facts of the AIPL stage and the rules only, named as
# the facts they are (each is an attribute of Aggregates of the same name); bits 10 to 16
# of `fact_bits` in this order.
_OTHER_FACTS = (
    "engagements",
    "shares",
    "invitations",
    "converted_invitees",
    "subscribed",
    "acquisition_channel",
    "acquisition_source",
)


# Every fact a rule may read (rules.FACT_TYPES), a bit each in this order: those time
# moves, the others `derive` reads, and the two that move only with the scoring inputs
# (`_same_scoring_inputs`), so never alone. Compiled, which facts moved and which the
# rules read are C integers and one `&` tells whether the rules must run, where sets of
# names were built, looked up and compared through Python.
_FACT_ORDER = (*_TIME_FACTS, *_OTHER_FACTS, "lifetime_orders", "lifetime_amount_minor")
_ALL_FACTS = (1 << len(_FACT_ORDER)) - 1
_AIPL_STAGE_BIT = 1 << _FACT_ORDER.index("aipl_stage")


def fact_bits(names: Iterable[str] | None) -> int:
    """The bits of the facts `names` (bit i: `_FACT_ORDER[i]`); all of them for None (the
    facts a rule book reads when they are not known)."""
    if names is None:
        return _ALL_FACTS
    bits = 0
    for name in names:
        bits |= 1 << _FACT_ORDER.index(name)
    return bits


def fact_names(bits: int) -> frozenset[str]:
    """The facts of `bits` (`fact_bits`), by name."""
    return frozenset(n for i, n in enumerate(_FACT_ORDER) if bits >> i & 1)


def _changed_other_facts(a: Aggregates, b: Aggregates) -> int:
    """Which of `_OTHER_FACTS` differ between `a` and `b`, as bits (`fact_bits`; tests/
    unit/test_state.py checks each). Most events move none of these (a purchase, a chat
    from a brand's staff) or one (an inbound chat)."""
    moved = 0
    if a.engagements != b.engagements:
        moved |= 1 << 10
    if a.shares != b.shares:
        moved |= 1 << 11
    if a.invitations != b.invitations:
        moved |= 1 << 12
    if a.converted_invitees != b.converted_invitees:
        moved |= 1 << 13
    if _subscribed(a) != _subscribed(b):
        moved |= 1 << 14
    if a.acquisition_channel != b.acquisition_channel:
        moved |= 1 << 15
    if a.acquisition_source != b.acquisition_source:
        moved |= 1 << 16
    return moved


def _rule_of(dim: str, d: Derived, a: Aggregates, brand: str, policy: Policy) -> str:
    """The rule text that put `d`'s value of `dim` there (only built for changes)."""
    if dim == "rfm_segment":
        if d.rfm_segment is None:
            return "rfm:never_purchased"
        sc = d.scores
        return f"rfm:R{sc.r}F{sc.f}M{sc.m}/high>={policy.rfm_for(brand).high_score}"
    if dim == "aipl_stage":
        return f"aipl:{d.aipl_stage}"
    return lc.rule_of(d.lifecycle, a.purchase_history(), policy.lifecycle)


def next_due(s: PersonState, brand: str, policy: Policy) -> int | None:
    """The earliest time (ms) after `s.as_of` at which time alone may change a segment."""
    if s.due == _DUE_NEVER:
        return None
    if s.due != _DUE_UNKNOWN:
        return s.due
    due = compute_due(s.agg, s.as_of, brand, policy)
    return None if due == DUE_NEVER else due


def compute_due(a: Aggregates, as_of: int, brand: str, policy: Policy) -> int:
    """`next_due` from scratch (DUE_NEVER when none): the smallest candidate day after
    today among the recency thresholds, window exits, lifecycle and rule day thresholds."""
    today = rfm.day_of(as_of)
    bc = policy.core_for(brand)
    rp = bc.rfm
    # The smallest candidate day after today, kept as the candidates come (compiled: C
    # integers, no list of them, no int boxed); -1 while there is none.
    best = -1
    if a.last_purchase_day >= 0:
        for t in rp.recency_days:  # ascending: the first one ahead is the earliest
            d = a.last_purchase_day + t + 1
            if d > today:
                best = d
                break
    for first, _, _ in a.buckets:  # sorted by day: the first to leave the window comes first
        d = first + rp.window_days
        if d > today:
            if best < 0 or d < best:
                best = d
            break
    d = lc.next_transition_day(a.purchase_history(), today, policy.lifecycle)
    if d >= 0 and (best < 0 or d < best):
        best = d
    day_thresholds = bc.day_thresholds
    if day_thresholds:
        anchors = {
            "days_since_last_purchase": a.last_purchase_day,
            "days_since_first_seen": rfm.day_of(a.first_seen),
        }
        for counter, thresholds in day_thresholds.items():
            anchor = anchors[counter]
            if anchor >= 0:  # a threshold k flips `== k`, `>= k` ... on day anchor+k or +k+1
                for k in thresholds:
                    for d in (anchor + k, anchor + k + 1):
                        if d > today and (best < 0 or d < best):
                            best = d
    return best * _MS_PER_DAY if best >= 0 else _DUE_NEVER


# -- transitions -------------------------------------------------------------------------


def _changes(
    before: Derived,
    after: Derived,
    agg: Aggregates,
    brand: str,
    person_id: str,
    cause: str,
    at: int,
    seq: int,
    policy: Policy,
) -> list[SegmentChange]:
    moves: list[tuple[str, str | None, str | None, str]] = []
    # field by field, not getattr by name: compiled, these are C field reads (and `is`
    # first, as in _same_derived)
    if before.rfm_segment is not after.rfm_segment and before.rfm_segment != after.rfm_segment:
        rule = _rule_of("rfm_segment", after, agg, brand, policy)
        moves.append(("rfm_segment", before.rfm_segment, after.rfm_segment, rule))
    if before.aipl_stage is not after.aipl_stage and before.aipl_stage != after.aipl_stage:
        rule = _rule_of("aipl_stage", after, agg, brand, policy)
        moves.append(("aipl_stage", before.aipl_stage, after.aipl_stage, rule))
    if before.lifecycle is not after.lifecycle and before.lifecycle != after.lifecycle:
        rule = _rule_of("lifecycle", after, agg, brand, policy)
        moves.append(("lifecycle", before.lifecycle, after.lifecycle, rule))
    # Most changes move a segment, stage or lifecycle only: the tag and layer diffs are
    # built only when those tuples differ. Tags are sorted and each once (Derived): a walk
    # over the few of them, in order, where sets and sorts cost ~3 % of the core's work.
    old_tags, new_tags = before.tags, after.tags
    if old_tags is not new_tags and old_tags != new_tags:
        book = policy.rules_for(brand)
        for tag in old_tags:
            if tag not in new_tags:
                rule = book.explain_tag(tag)
                moves.append(("tag", tag, None, rule.replace("tag:", "untag:", 1)))
        for tag in new_tags:
            if tag not in old_tags:
                moves.append(("tag", None, tag, book.explain_tag(tag)))
    if before.layers is not after.layers and before.layers != after.layers:
        book = policy.rules_for(brand)
        old_layers, new_layers = dict(before.layers), dict(after.layers)
        for layer in sorted(old_layers.keys() | new_layers.keys()):
            b, a = old_layers.get(layer), new_layers.get(layer)
            if b != a:
                moves.append((f"layer:{layer}", b, a, book.explain_level(layer, a)))
    return [
        # in field order: (brand, person_id, dimension, from_value, to_value, rule,
        # cause_event_id, event_time, seq, scores_before, scores_after, policy_version)
        _new_change(
            brand,
            person_id,
            dim,
            b,
            a,
            rule,
            cause,
            at,
            seq + i + 1,
            before.scores,
            after.scores,
            policy.version,
        )
        for i, (dim, b, a, rule) in enumerate(moves)
    ]


def _recompute(
    s: PersonState, agg: Aggregates, brand: str, person_id: str, cause: str, at: int,
    policy: Policy, last_offset: int | None = None, recent: tuple[str, ...] | None = None,
    same_policy: bool = True, sources: tuple[Source, ...] | None = None,
) -> tuple[PersonState, list[SegmentChange]]:  # fmt: skip
    """Re-derive after `agg` changed or time passed, as one new state (and the changes);
    `last_offset` / `recent` / `sources` replace the bookkeeping when given.

    Most events leave the purchases alone (chats, shares, joins). Until the state's due
    time, time alone changes nothing either, so RFM, the lifecycle and the due time of
    `s` still hold and are kept, and the rules run only if they read a fact that changed.
    `same_policy=False` (the policy changed) re-derives everything."""
    now = s.as_of if s.as_of > at else at
    timed = agg is s.agg  # a time step (advance): only time moves, and trims the buckets
    trimmed = rfm.trim(agg.buckets, rfm.day_of(now), policy.rfm_for(brand).window_days)
    if trimmed is not agg.buckets:
        n = _draft(agg)
        n.buckets = trimmed
        agg = _sealed(n)
    if same_policy and _holds_at(s, now) and _same_scoring_inputs(agg, s.agg):
        due = s.due
        changed = _changed_other_facts(agg, s.agg)
        # positional: compiled, keywords would make it a call through Python
        derived = derive(agg, brand, now, policy, s.derived, changed) if changed else s.derived
    else:
        # a due time passed, or the policy changed: everything time moves derived again;
        # after a time step, the rules' outcome is kept if they read none of it (`prior`)
        prior = s.derived if timed and same_policy and s.version > 0 else None
        derived = derive(agg, brand, now, policy, None, 0, prior)
        due = compute_due(agg, now, brand, policy)
    changes = (
        _changes(s.derived, derived, agg, brand, person_id, cause, at, s.seq, policy)
        if derived is not s.derived and not _same_derived(derived, s.derived)
        else []
    )
    new = _new_state(
        s.version + 1,
        s.seq + len(changes),
        s.last_offset if last_offset is None else last_offset,
        now,
        s.recent_event_ids if recent is None else recent,
        agg,
        derived,
        s.source_offsets if sources is None else sources,
        due,
    )
    return new, changes


def _same_derived(a: Derived, b: Derived) -> bool:
    """`a == b`, field by field: compiled, C reads, where the dataclass's `==` builds and
    compares a tuple of each one's fields (the window is no part of the value). The values
    are most often the same objects (the segment names are shared, a carried-forward
    state keeps its tags): `is` first, a pointer compare, before Python's `==`."""
    sa, sb = a.scores, b.scores
    return (
        sa.r == sb.r
        and sa.f == sb.f
        and sa.m == sb.m
        and (a.rfm_segment is b.rfm_segment or a.rfm_segment == b.rfm_segment)
        and (a.aipl_stage is b.aipl_stage or a.aipl_stage == b.aipl_stage)
        and (a.lifecycle is b.lifecycle or a.lifecycle == b.lifecycle)
        and (a.tags is b.tags or a.tags == b.tags)
        and (a.layers is b.layers or a.layers == b.layers)
    )


def _holds_at(s: PersonState, now: int) -> bool:
    """Whether `s.derived` and `s.due`, derived at `s.as_of`, still hold at `now` for the
    same aggregates: no due time lies in between (time only matters at due times)."""
    return s.version > 0 and s.due != _DUE_UNKNOWN and (s.due == _DUE_NEVER or now < s.due)


def reassess(
    state: PersonState, brand: str, person_id: str, policy: Policy
) -> tuple[PersonState, list[SegmentChange]]:
    """Segments re-derived under a changed policy (e.g. new RFM thresholds), as of the
    person's clock. The changes name the policy as their cause."""
    cause = f"policy:{policy.version}"
    return _recompute(
        state, state.agg, brand, person_id, cause, state.as_of, policy, same_policy=False
    )


def advance(
    state: PersonState, brand: str, person_id: str, now: int, policy: Policy
) -> tuple[PersonState, list[SegmentChange]]:
    """Let time pass up to `now` (ms): every due time on the way is applied in order."""
    changes: list[SegmentChange] = []
    due = next_due(state, brand, policy)
    if due is None or due > now:
        return state, changes
    while due is not None and due <= now:
        state, more = _recompute(state, state.agg, brand, person_id, TIME_CAUSE, due, policy)
        changes += more
        due = next_due(state, brand, policy)
    return state, changes


def _with_id(ids: tuple[str, ...], event_id: str, keep: int) -> tuple[str, ...]:
    """`(*ids, event_id)[-keep:]`, the recent ids with one more. Compiled, one tuple
    filled in C (`_with_id_c`, state.pxd); the unpacking built a list, a tuple and the
    slice on every event."""
    if cython.compiled:
        return _with_id_c(ids, event_id, keep)  # type: ignore[name-defined,no-any-return]  # noqa: F821
    n = len(ids)
    if n < keep:
        return ids + (event_id,)  # noqa: RUF005 (compiled: one concatenation, no list)
    return ids[n - keep + 1 :] + (event_id,)  # noqa: RUF005


def is_duplicate(state: PersonState | None, event: Touchpoint) -> bool:
    return state is not None and holds_id(state.recent_event_ids, event.event_id)


def holds_id(ids: tuple[str, ...], event_id: str) -> bool:
    """`event_id in ids` (a person's recent ids, asked on every event). Compiled, their
    cached hashes are compared first, as C integers, and only an equal one by its text:
    `in` compares each id as text through Python's generic compare (~5 % of the core's
    work with 16 ids kept). Exact strings only: a str subclass may hash otherwise than
    the text it equals (a StrEnum member hashes its name), so one is compared as text.
    Each id's hash is read from the string itself (`_str_hash`, state.pxd), not asked of
    it through a call."""
    if cython.compiled and type(event_id) is str:
        h = hash(event_id)
        for x in ids:
            if x is event_id:
                return True
            if (
                type(x) is not str or _str_hash(x) == h  # type: ignore[name-defined]  # noqa: F821
            ) and x == event_id:
                return True
        return False
    return event_id in ids


def is_forwarded_again(state: PersonState | None, source: Source | None) -> bool:
    """Whether an event from `source` is one whose original this state already applied
    (the offset is at or below the last applied from that partition)."""
    if state is None or source is None:
        return False
    partition, offset = source
    for p, last in state.source_offsets:  # noqa: SIM110 - a loop: no generator per call
        if p == partition and offset <= last:
            return True
    return False


def _with_source(offsets: tuple[Source, ...], source: Source | None) -> tuple[Source, ...]:
    """`offsets` (sorted by partition, one entry each) with `source` taken in: its
    partition's offset raised to it, or a new entry in partition order. A walk over the
    one or two entries a person has, not a dict and a sort per event (~2.8 % of a busy
    worker's samples, docs/benchmarks.md)."""
    if source is None:
        return offsets
    partition, offset = source
    for i, (p, last) in enumerate(offsets):
        if p == partition:
            if last >= offset:
                return offsets
            return (*offsets[:i], (partition, offset), *offsets[i + 1 :])
        if p > partition:
            return (*offsets[:i], (partition, offset), *offsets[i:])
    return (*offsets, (partition, offset))


def apply(
    state: PersonState | None,
    event: Touchpoint,
    person_id: str,
    policy: Policy,
    offset: int = -1,
    source: Source | None = None,
) -> tuple[PersonState, list[SegmentChange]]:
    """Apply one event: first the due times before it, then the event itself.

    A duplicate (an event id among the person's recent ones) changes nothing, nor does an
    event forwarded again from a `source` already applied (`is_forwarded_again`).
    """
    if state is not None and (is_duplicate(state, event) or is_forwarded_again(state, source)):
        return state, []
    return apply_new(state, event, person_id, policy, offset, source)


_NO_AGGREGATES = Aggregates()
_NOT_DERIVED = Derived()


def _first_state(t: int) -> PersonState:
    """`PersonState(as_of=t, agg=Aggregates(first_seen=t, last_seen=t))`: a person's state
    before their first event (at `t`) is applied."""
    n = _draft(_NO_AGGREGATES)
    n.first_seen = t
    n.last_seen = t
    return _new_state(0, 0, -1, t, (), _sealed(n), _NOT_DERIVED, (), DUE_UNKNOWN)


def apply_new(
    state: PersonState | None,
    event: Touchpoint,
    person_id: str,
    policy: Policy,
    offset: int = -1,
    source: Source | None = None,
) -> tuple[PersonState, list[SegmentChange]]:
    """`apply` for an event the caller has already found to be neither a duplicate nor
    forwarded again (the engine checks both itself, to count them)."""
    t = event.occurred_at
    if state is None:
        state = _first_state(t)
    if state.due == _DUE_NEVER or t < state.due:  # most events: no due time passed
        changes: list[SegmentChange] = []
    else:
        state, changes = advance(state, event.brand, person_id, t, policy)
    a = _effect(state.agg, event)
    recent = _with_id(state.recent_event_ids, event.event_id, policy.dedup_window)
    last_offset = state.last_offset if state.last_offset > offset else offset
    sources = _with_source(state.source_offsets, source)
    state, more = _recompute(  # positional: compiled, a keyword makes it a Python call
        state, a, event.brand, person_id, event.event_id, t, policy, last_offset, recent,
        True, sources,
    )  # fmt: skip
    if changes:
        changes += more
        return state, changes
    return state, more


def state_key(brand: str, person_id: str) -> str:
    """Table key of a (brand, person) state; brand slugs never contain ':'."""
    return f"{brand}:{person_id}"


def split_state_key(key: str) -> tuple[str, str]:
    brand, _, person_id = key.partition(":")
    return brand, person_id


def table_key(brand: str, person_id: str) -> bytes:
    """`state_key(brand, person_id)` as the bytes the state table stores it under: made
    and encoded in one step (compiled, as a C string, where `.encode()` on the key was a
    method call through Python on every event)."""
    key = f"{brand}:{person_id}"
    return key.encode()


def split_table_key(key: bytes) -> tuple[str, str]:
    """(brand, person id) of a `table_key` (as `partition(":")` splits it; compiled, a C
    search and two slices, no tuple of three)."""
    text = key.decode()
    i = text.find(":")
    if i < 0:
        return text, ""
    return text[:i], text[i + 1 :]


# -- referrals (a referred person's first purchase counts for their referrer) ---------------


def referral_conversion(
    before: PersonState | None, after: PersonState, event: Touchpoint, policy: Policy
) -> str | None:
    """The referrer to credit when `event` was this person's first purchase within the
    referral window of their referred join; None otherwise."""
    a = after.agg
    first_purchase = (before is None or before.agg.first_purchase_day < 0) and (
        a.first_purchase_day >= 0 and event.type == EventType.PURCHASE
    )
    if not first_purchase or a.referred_by is None:
        return None
    window = policy.referral_window_days * _MS_PER_DAY
    if not a.referred_at <= event.occurred_at <= a.referred_at + window:
        return None
    return a.referred_by


def referral_id(invitee: str) -> str:
    """The id a referral credit goes by: its cause, and its entry among recent event ids
    (so a repeated credit for the same invitee is dropped like a repeated event)."""
    return f"referral:{invitee}"


def apply_referral(
    state: PersonState | None,
    brand: str,
    person_id: str,
    invitee: str,
    at: int,
    policy: Policy,
) -> tuple[PersonState, list[SegmentChange]]:
    """Credit a converted invitee to their referrer (cause `referral:<invitee>`)."""
    if state is None:
        state = _first_state(at)
    state, changes = advance(state, brand, person_id, at, policy)
    n = _draft(state.agg)
    n.converted_invitees = state.agg.converted_invitees + 1
    agg = _sealed(n)
    cause = referral_id(invitee)
    state, more = _recompute(state, agg, brand, person_id, cause, at, policy)
    recent = _with_id(state.recent_event_ids, cause, policy.dedup_window)
    return replace(state, recent_event_ids=recent), changes + more


# -- merging two people (identity resolution) ----------------------------------------------


def merge_aggregates(a: Aggregates, b: Aggregates) -> Aggregates:
    """One person's aggregates from two partial views of them (two channel identities
    found to be the same customer). Exact, because every aggregate is a sum, min or max;
    refunds waiting for an order the other view holds are applied."""
    last, previous = _top_two_days(
        {a.last_purchase_day, a.previous_purchase_day, b.last_purchase_day,
         b.previous_purchase_day} - {-1}
    )  # fmt: skip
    buckets = a.buckets
    for day, orders, amount in b.buckets:
        buckets = rfm.add_purchase(buckets, day, orders, amount)
    first_days = [d for d in (a.first_purchase_day, b.first_purchase_day) if d >= 0]
    joins = [x for x in (a, b) if x.acquired_at >= 0]
    first_join = min(joins, key=lambda x: x.acquired_at) if joins else a
    referrals = [x for x in (a, b) if x.referred_at >= 0]
    referred = min(referrals, key=lambda x: x.referred_at) if referrals else a
    recent = sorted((*a.recent_orders, *b.recent_orders), key=_BY_DAY_AND_ID)
    merged = Aggregates(
        first_seen=min(a.first_seen, b.first_seen),
        last_seen=max(a.last_seen, b.last_seen),
        engagements=a.engagements + b.engagements,
        shares=a.shares + b.shares,
        invitations=a.invitations + b.invitations,
        lifetime_orders=a.lifetime_orders + b.lifetime_orders,
        lifetime_amount_minor=a.lifetime_amount_minor + b.lifetime_amount_minor,
        first_purchase_day=min(first_days) if first_days else -1,
        last_purchase_day=last,
        previous_purchase_day=previous,
        buckets=buckets,
        recent_orders=tuple(recent[-RECENT_ORDERS_KEPT:]),
        last_join=max(a.last_join, b.last_join),
        last_leave=max(a.last_leave, b.last_leave),
        acquired_at=first_join.acquired_at,
        acquisition_channel=first_join.acquisition_channel,
        acquisition_source=first_join.acquisition_source,
        referred_by=referred.referred_by,
        referred_at=referred.referred_at,
        converted_invitees=a.converted_invitees + b.converted_invitees,
    )
    for order_id, amount in (*a.pending_refunds, *b.pending_refunds):
        refunded = _take_refund(merged, order_id, amount)
        if refunded is not None:
            merged = refunded
        else:
            merged = _with_pending_refund(merged, order_id, amount)
    return merged


def merge_id(absorbed_id: str) -> str:
    """The cause of a merge's changes, and its entry among the survivor's recent ids."""
    return f"merge:{absorbed_id}"


def merge(
    survivor: PersonState,
    absorbed: PersonState,
    brand: str,
    survivor_id: str,
    absorbed_id: str,
    policy: Policy,
) -> tuple[PersonState, list[SegmentChange]]:
    """The survivor's state with the absorbed person's folded in, re-derived at the later
    clock; the changes end with one `identity` change naming the absorbed id."""
    if absorbed.version == 0:
        return survivor, []
    if survivor.version == 0:
        survivor = replace(survivor, agg=absorbed.agg, as_of=absorbed.as_of, due=DUE_UNKNOWN)
        agg = absorbed.agg
    else:
        agg = merge_aggregates(survivor.agg, absorbed.agg)
    cause = merge_id(absorbed_id)
    at = max(survivor.as_of, absorbed.as_of)
    state, changes = _recompute(survivor, agg, brand, survivor_id, cause, at, policy)
    # the merge's own id last, so a repeated merge of the same person is recognised
    recent = (*state.recent_event_ids, *absorbed.recent_event_ids, cause)
    recent = recent[-policy.dedup_window :]
    sources = state.source_offsets
    for source in absorbed.source_offsets:  # both persons' events were forwarded
        sources = _with_source(sources, source)
    identity = SegmentChange(
        brand=brand,
        person_id=survivor_id,
        dimension="identity",
        from_value=absorbed_id,
        to_value=survivor_id,
        rule="identity:merged",
        cause_event_id=cause,
        event_time=at,
        seq=state.seq + 1,
        scores_before=survivor.derived.scores,
        scores_after=state.derived.scores,
        policy_version=policy.version,
    )
    merged = replace(state, seq=state.seq + 1, recent_event_ids=recent, source_offsets=sources)
    return merged, [*changes, identity]
