"""The benchmark's traffic: a fixed population with Zipf-distributed activity. No I/O.

Unlike `pipeline.generator` (which grows its population as it plays and picks a customer
in O(customers) per event), this draws from a fixed population in O(log people) per
event and includes refunds, so a million events over a hundred thousand people can be
built up front, outside every timed section. Deterministic for a seed.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass

from pipeline.events import (
    Chat,
    EventType,
    Join,
    Payload,
    Purchase,
    Refund,
    Share,
    Touchpoint,
    UserRef,
)
from pipeline.generator import CHANNELS, DEMO_BRANDS, SOURCES
from pipeline.identity import person_id_for
from pipeline.pii import pseudonymise
from pipeline.rfm import MS_PER_DAY

# Share of each kind of touch once a person has joined (the rest of 1.0 is chat).
PURCHASE_SHARE, REFUND_SHARE, SHARE_SHARE = 0.18, 0.02, 0.12
ZIPF_EXPONENT = 1.1
BASKETS_MINOR = (4_900, 9_900, 19_900, 39_900, 89_900)


@dataclass(frozen=True, slots=True)
class Workload:
    """Events in publish order, each with its person id (computed once, up front)."""

    events: list[Touchpoint]
    person_ids: list[str]
    people: int  # size of the population the events were drawn from

    def __len__(self) -> int:
        return len(self.events)

    @property
    def states(self) -> int:
        """Distinct (brand, person) states the events create."""
        return len({(e.brand, p) for e, p in zip(self.events, self.person_ids, strict=True)})


def build(
    n: int,
    people: int,
    pii_key: bytes,
    start_ms: int,
    span_days: float,
    seed: int = 8,
    id_prefix: str = "bench",
) -> Workload:
    """`n` events over `people` people, event times spread evenly over `span_days`."""
    rng = random.Random(seed)
    channels = list(CHANNELS)
    channel_weights = [w for w, _ in CHANNELS.values()]
    cum = list(itertools.accumulate(1.0 / (rank + 1) ** ZIPF_EXPONENT for rank in range(people)))
    # Ranks are shuffled over ids so the heavy head is spread over partitions.
    order = list(range(people))
    rng.shuffle(order)
    users: dict[int, tuple[UserRef, str, str, int]] = {}
    joined: set[int] = set()
    orders: dict[int, list[tuple[str, int]]] = {}
    step = span_days * MS_PER_DAY / max(1, n)
    events: list[Touchpoint] = []
    person_ids: list[str] = []
    for i in range(n):
        who = order[bisect.bisect_left(cum, rng.random() * cum[-1])]
        u = users.get(who)
        if u is None:
            channel = rng.choices(channels, channel_weights)[0]
            id_type = CHANNELS[channel][1]
            ref = UserRef(id_type, pseudonymise(id_type, f"{id_prefix}-{seed}-{who}", pii_key))
            u = users[who] = (ref, rng.choice(DEMO_BRANDS), channel, rng.choice(BASKETS_MINOR))
        user, brand, channel, basket = u
        at = start_ms + int(i * step)
        payload: Payload
        if who not in joined:
            joined.add(who)
            kind, payload = EventType.JOIN, Join("follow", source=rng.choice(SOURCES))
        else:
            roll = rng.random()
            mine = orders.setdefault(who, [])
            if roll < PURCHASE_SHARE:
                amount = max(100, int(rng.lognormvariate(0, 0.5) * basket))
                order_id = f"{id_prefix}-o{i:09d}"
                mine.append((order_id, amount))
                kind, payload = EventType.PURCHASE, Purchase(order_id, amount, items=2)
            elif roll < PURCHASE_SHARE + REFUND_SHARE and mine:
                order_id, amount = mine.pop(rng.randrange(len(mine)))
                part = amount if rng.random() < 0.7 else amount // 2
                kind, payload = EventType.REFUND, Refund(order_id, part)
            elif roll < PURCHASE_SHARE + REFUND_SHARE + SHARE_SHARE:
                kind, payload = EventType.SHARE, Share(f"content-{rng.randint(1, 40)}")
            else:
                inbound = rng.random() < 0.5
                payload = Chat("inbound", "customer") if inbound else Chat("outbound", "staff")
                kind = EventType.CHAT
        events.append(
            Touchpoint(f"{id_prefix}-{seed}-{i:09d}", kind, brand, channel, user, at, payload)
        )
        person_ids.append(person_id_for(user))
    return Workload(events, person_ids, people)
