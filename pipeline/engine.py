"""One source partition's event-time clock and due-time index. Pure (no I/O, no wall clock).

The worker keeps one `PartitionEngine` per events-topic partition it owns; `touchflow
rebuild`, the tests and the benchmark use the same class over a plain dict.

Time is event time: a partition's *watermark* is the latest event time seen on it minus
the allowed lateness. A customer who stops buying moves to at risk, dormant, churned when
the watermark passes their due time — without an event from them and without scanning
everyone: the due-time index holds the next due time of every person. Entries are never
updated in place; a stale one (the person's due time moved) is skipped when its time comes.

Due times fall on day boundaries (`state.compute_due`), so many people share one: the
index is a heap of the distinct due times, each with the keys due then, not a heap of
(due time, key) pairs. A push is a dict lookup and a list append, where a pair heap took
a tuple and a sift of tuple compares per push and per pop (~6 % of the core's work). A
due time's keys fire in key order, as the pair heap fired them: the order of the changes
does not depend on the order the index was filled in (events, or a recovered table).

Determinism: `state.apply` first applies a person's own due times before an event, so a
person's segment changes depend only on their events in partition order — not on when
the watermark happened to fire them. Replaying the same partition gives the same
changes, with the same sequence numbers, bit for bit.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field, replace

try:
    import cython
except ImportError:  # not installed (a runtime without the build's tools): plain Python
    from pipeline import _no_cython as cython

from pipeline import state as core
from pipeline.events import EventType, Touchpoint

Store = MutableMapping[bytes, core.PersonState]
_PURCHASE = EventType.PURCHASE  # bound once: an enum member looked up per event is not free
# C constants when compiled (engine.pxd): `core.DUE_NEVER` is a module attribute lookup
_DUE_UNKNOWN, _DUE_NEVER = core.DUE_UNKNOWN, core.DUE_NEVER


# The store is a plain dict in a rebuild and the benchmarks, the worker's write-behind
# mapping (agents/write_behind.py) in a worker. Compiled, a dict's lookup and store are
# C calls here, where `store.get` on an untyped object is a method call through Python.
def _stored(store: Store, key: bytes) -> core.PersonState | None:
    if type(store) is dict:
        plain: dict[bytes, core.PersonState] = store
        return plain.get(key)
    return store.get(key)


def _store(store: Store, key: bytes, s: core.PersonState) -> None:
    if type(store) is dict:
        plain: dict[bytes, core.PersonState] = store
        plain[key] = s
    else:
        store[key] = s


class Outcome:
    """What processing one event did, for the adapter's metrics and sends."""

    __slots__ = ("changes", "duplicate", "late", "redelivered", "referrals", "written")

    def __init__(self) -> None:
        self.changes: list[core.SegmentChange] = []
        # (brand, referrer, invitee, event time): conversions to credit in the referrer's
        # partition (the adapter sends them there)
        self.referrals: list[tuple[str, str, str, int]] = []
        self.written: list[bytes] = []  # state keys stored (the event's, and due ones)
        self.duplicate = False  # event id seen recently for this person: dropped
        self.redelivered = False  # offset already applied (restart): skipped
        self.late = False  # older than the watermark: applied, counted


def _new_outcome() -> Outcome:
    """`Outcome()`: compiled, built in C (the class call parsed its no arguments through
    Python on every event the caller gave no outcome to fill)."""
    if cython.compiled:
        out = Outcome.__new__(Outcome)
        out.changes = []
        out.referrals = []
        out.written = []
        out.duplicate = out.redelivered = out.late = False
        return out
    return Outcome()


@dataclass
class PartitionEngine:
    policy: core.Policy
    store: Store
    allowed_lateness_ms: int = 0
    max_event_time: int | None = None
    _due_times: list[int] = field(default_factory=list)  # a heap of the due times held
    _due_keys: dict[int, list[bytes]] = field(default_factory=dict)  # due time -> keys
    _entries: int = 0  # keys held, stale ones included

    @property
    def watermark(self) -> int | None:
        if self.max_event_time is None:
            return None
        return self.max_event_time - self.allowed_lateness_ms

    @property
    def backlog(self) -> int:
        """Entries in the due-time index (including stale ones not yet popped)."""
        return self._entries

    def schedule(self, key: bytes, s: core.PersonState) -> None:
        due = s.due  # cached when the state was derived here
        if due == _DUE_UNKNOWN:  # e.g. decoded from the changelog
            brand, _ = core.split_table_key(key)
            due = core.compute_due(s.agg, s.as_of, brand, self.policy)
        if due != _DUE_NEVER:
            keys = self._due_keys.get(due)
            if keys is None:
                self._due_keys[due] = [key]
                heapq.heappush(self._due_times, due)
            else:
                keys.append(key)
            self._entries += 1

    def rescheduled(self, key: bytes, old: core.PersonState | None, new: core.PersonState) -> None:
        """`schedule` the state `new` that replaced `old` under `key`, unless it is due
        when `old` was: `old`'s entry is in the index already, since every state with a
        known due time was scheduled when it was derived (here, or by the merge in
        agents.identity) and every recovered one when the index was built. Most events
        leave the due time where it was (chats, shares, a purchase on a day already
        counted); pushing it again would leave a stale entry for `fire_due` to skip. (`new`
        comes from `state._recompute`, whose due time is always known; an `old` decoded
        from the changelog has none, so it always differs.)"""
        if old is None or old.due != new.due:
            self.schedule(key, new)

    def index(self, items: Iterable[tuple[bytes, core.PersonState]]) -> None:
        """(Re)build the due-time index, e.g. from a recovered table."""
        self._due_times.clear()
        self._due_keys.clear()
        self._entries = 0
        for key, s in items:
            self.schedule(key, s)

    def reassess(self, keys: Iterable[bytes], out: Outcome) -> None:
        """Re-derive the states under `keys` with the current policy (it changed)."""
        for key in keys:
            s = _stored(self.store, key)
            if s is None:
                continue
            brand, person_id = core.split_table_key(key)
            s, changes = core.reassess(s, brand, person_id, self.policy)
            _store(self.store, key, s)
            self.schedule(key, s)
            out.written.append(key)
            out.changes += changes

    def fire_due(self, now: int, written: list[bytes] | None = None) -> list[core.SegmentChange]:
        """Apply every due time up to `now` (ms); return the changes."""
        changes: list[core.SegmentChange] = []
        times = self._due_times
        while times and times[0] <= now:
            due = heapq.heappop(times)
            keys = self._due_keys.pop(due)
            self._entries -= len(keys)
            keys.sort()  # key order (see the module's docstring)
            for key in keys:
                s = _stored(self.store, key)
                if s is None:
                    continue  # the person moved to another worker
                brand, person_id = core.split_table_key(key)
                current = s.due  # `core.next_due`, as a C integer (DUE_NEVER for None)
                if current == _DUE_UNKNOWN:
                    current = core.compute_due(s.agg, s.as_of, brand, self.policy)
                if current != due:
                    continue  # stale: an event moved this person's due time
                s, more = core.advance(s, brand, person_id, due, self.policy)
                _store(self.store, key, s)
                self.schedule(key, s)  # a later due time: another entry, never in `keys`
                if written is not None:
                    written.append(key)
                changes += more
        return changes

    def on_event(
        self,
        event: Touchpoint,
        person_id: str,
        offset: int = -1,
        out: Outcome | None = None,
        source: core.Source | None = None,
    ) -> Outcome:
        """Advance the clock to this event, fire what is due, then apply the event.
        `source`: the (events partition, offset) the resolver forwarded it from."""
        out = out if out is not None else _new_outcome()
        t = event.occurred_at
        # the clock as a C integer here (compiled); the attribute (None before any event)
        # is written only when it moves
        if self.max_event_time is None:
            latest = t
            self.max_event_time = t
        else:
            latest = self.max_event_time
            if t > latest:
                latest = t
                self.max_event_time = t
        wm = latest - self.allowed_lateness_ms  # self.watermark, inline
        out.late = t < wm
        times = self._due_times
        if times and times[0] <= wm:  # most events find nothing due: no call, no list
            out.changes += self.fire_due(wm, out.written)
        # The brand's own view, then each brand group's (cross-brand) view of the person.
        self._apply(event, person_id, offset, out, True, source)
        for group in self.policy.groups_of(event.brand):
            self._apply(replace(event, brand=group), person_id, offset, out, False, source)
        return out

    def _apply(
        self,
        event: Touchpoint,
        person_id: str,
        offset: int,
        out: Outcome,
        own_brand: bool,
        source: core.Source | None,
    ) -> None:
        key = core.table_key(event.brand, person_id)
        old = _stored(self.store, key)
        if old is not None and 0 <= offset <= old.last_offset:
            out.redelivered = True  # its effects are already in the state
            return
        if source is not None and core.is_forwarded_again(old, source):
            out.redelivered = True  # forwarded again by a resolver that restarted
            return
        if core.is_duplicate(old, event):
            out.duplicate = True
            return
        new, changes = core.apply_new(old, event, person_id, self.policy, offset, source)
        _store(self.store, key, new)
        self.rescheduled(key, old, new)
        out.written.append(key)
        out.changes += changes
        if event.type != _PURCHASE or not own_brand:
            return  # only a purchase converts; groups see the same referral already
        referrer = core.referral_conversion(old, new, event, self.policy)
        if referrer is not None:
            out.referrals.append((event.brand, referrer, person_id, event.occurred_at))

    def on_referral(self, brand: str, referrer: str, invitee: str, at: int, out: Outcome) -> None:
        """Credit a converted invitee to a referrer whose state lives in this partition.
        A repeat (redelivery) is recognised by the invitee, among the recent ids."""
        key = core.table_key(brand, referrer)
        old = _stored(self.store, key)
        if old is not None and core.holds_id(old.recent_event_ids, core.referral_id(invitee)):
            out.duplicate = True
            return
        new, changes = core.apply_referral(old, brand, referrer, invitee, at, self.policy)
        _store(self.store, key, new)
        self.rescheduled(key, old, new)
        out.written.append(key)
        out.changes += changes

    def advance_to(self, now: int) -> list[core.SegmentChange]:
        """Move the clock with no event (a tick, or the end of a replay)."""
        if self.max_event_time is None or now > self.max_event_time:
            self.max_event_time = now
        wm = self.watermark
        assert wm is not None
        return self.fire_due(wm)
