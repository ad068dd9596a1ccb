"""Synthetic private-domain traffic for the demo and benchmarks: realistic enough to move
segments, deterministic for a seed. No I/O: it returns Touchpoints.

Each simulated customer arrives on one channel (some referred by an existing customer),
then chats, shares (sometimes naming an invitee) and buys at their own propensity; some
turn up on a second channel and an identify event links the two identities; some go
quiet for good. Users are drawn with Zipf-like weights (a few heavy customers, a long
tail). Raw ids are pseudonymised here, at the edge, like a channel service would with the
SDK.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.events import (
    Chat,
    EventType,
    Identify,
    Join,
    Payload,
    Purchase,
    Share,
    Touchpoint,
    UserRef,
)
from pipeline.pii import pseudonymise

DEMO_BRANDS = ("lumi", "mosu", "tideway")
# channel -> (weight, the id type that channel gives us)
CHANNELS: dict[str, tuple[float, str]] = {
    "wecom": (0.25, "external_userid"),
    "wechat_oa": (0.2, "openid"),
    "mini_program": (0.25, "unionid"),
    "community": (0.1, "external_userid"),
    "douyin": (0.1, "openid"),
    "xiaohongshu": (0.05, "openid"),
    "store": (0.05, "member_id"),
}
SOURCES = ("qr_code", "live_stream", "ad", "search", "referral", "poster")


@dataclass(slots=True)
class _Customer:
    brand: str
    channel: str
    user: UserRef
    weight: float
    buy_p: float  # chance that one of their touches is a purchase
    basket_minor: int  # typical order amount
    quiet: bool = False


class TrafficGenerator:
    def __init__(
        self,
        pii_key: bytes,
        seed: int = 7,
        brands: tuple[str, ...] = DEMO_BRANDS,
        new_customer_share: float = 0.08,
        churn_share: float = 0.002,
        second_channel_share: float = 0.01,
        referrals: bool = True,
    ) -> None:
        self._rng = random.Random(seed)
        self._key = pii_key
        self._brands = brands
        self._new_share = new_customer_share
        self._churn_share = churn_share
        self._second_share = second_channel_share
        # False: no join names a referrer, so no credit crosses partitions (the fault
        # suite needs every person's changes to depend on their own events only)
        self._referrals = referrals
        self._customers: list[_Customer] = []
        self._weights: list[float] = []
        self._serial = 0
        self._orders = 0
        self._channels = list(CHANNELS)
        self._channel_weights = [w for w, _ in CHANNELS.values()]

    @property
    def customers(self) -> int:
        return len(self._customers)

    def _new_customer(self, at_ms: int) -> tuple[_Customer, Touchpoint]:
        rng = self._rng
        channel = rng.choices(self._channels, self._channel_weights)[0]
        id_type = CHANNELS[channel][1]
        raw_id = f"{channel}-{id_type}-{len(self._customers):07d}-{rng.getrandbits(32):08x}"
        c = _Customer(
            brand=rng.choice(self._brands),
            channel=channel,
            user=UserRef(id_type, pseudonymise(id_type, raw_id, self._key)),
            weight=1.0 / (1 + len(self._customers) % 97) ** 0.8,  # Zipf-like heavy head
            buy_p=rng.choice((0.02, 0.05, 0.1, 0.2, 0.35)),
            basket_minor=rng.choice((4_900, 9_900, 19_900, 39_900, 89_900)),
        )
        source = rng.choice(SOURCES)
        same_brand = [o for o in self._customers if o.brand == c.brand]
        referred = source == "referral" and bool(same_brand) and self._referrals
        referrer = rng.choice(same_brand).user if referred else None
        self._customers.append(c)
        self._weights.append(c.weight)
        kind = {"wecom": "add_friend", "community": "join_group", "store": "register"}
        join = Join(kind.get(channel, "follow"), source=source, referrer=referrer)
        return c, self._event(c, EventType.JOIN, join, at_ms)

    def _second_channel(self, c: _Customer, at_ms: int) -> Touchpoint:
        """The customer shows up on another channel, which links the two identities (e.g.
        a store membership registered with the phone number the customer also uses online)."""
        rng = self._rng
        channel = rng.choice([ch for ch in self._channels if ch != c.channel])
        id_type = CHANNELS[channel][1]
        raw_id = f"{channel}-{id_type}-second-{self._serial:07d}-{rng.getrandbits(32):08x}"
        other = UserRef(id_type, pseudonymise(id_type, raw_id, self._key))
        link = _Customer(c.brand, channel, other, 0.0, c.buy_p, c.basket_minor)
        return self._event(link, EventType.IDENTIFY, Identify((c.user,)), at_ms)

    def _event(self, c: _Customer, t: EventType, payload: Payload, at_ms: int) -> Touchpoint:
        self._serial += 1
        return Touchpoint(
            event_id=f"gen-{self._serial:010d}-{self._rng.getrandbits(24):06x}",
            type=t,
            brand=c.brand,
            channel=c.channel,
            user=c.user,
            occurred_at=at_ms,
            payload=payload,
        )

    def next_event(self, at_ms: int) -> Touchpoint:
        """One touchpoint happening at `at_ms` (simulated event time)."""
        rng = self._rng
        if not self._customers or rng.random() < self._new_share:
            return self._new_customer(at_ms)[1]
        i = rng.choices(range(len(self._customers)), self._weights)[0]
        c = self._customers[i]
        if rng.random() < self._churn_share:
            c.quiet = True  # goes quiet for good: time will move them down
            self._weights[i] = 0.0
        roll = rng.random()
        if roll < c.buy_p:
            self._orders += 1
            amount = max(100, int(rng.lognormvariate(0, 0.5) * c.basket_minor))
            place = "store" if c.channel == "store" else "online"
            purchase = Purchase(
                f"o{self._orders:09d}", amount, items=rng.randint(1, 4), place=place
            )
            return self._event(c, EventType.PURCHASE, purchase, at_ms)
        if roll < c.buy_p + 0.1:
            invitee = rng.choice(self._customers).user if rng.random() < 0.3 else None
            share = Share(f"content-{rng.randint(1, 40)}", invitee)
            return self._event(c, EventType.SHARE, share, at_ms)
        if roll < c.buy_p + 0.1 + self._second_share:
            return self._second_channel(c, at_ms)
        direction = rng.choice(("inbound", "outbound"))
        party = "customer" if direction == "inbound" else rng.choice(("staff", "bot"))
        return self._event(c, EventType.CHAT, Chat(direction, party), at_ms)
