"""AIPL stage (Awareness → Interest → Purchase → Loyalty) as a pure function of counters."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AiplStage(StrEnum):
    AWARENESS = "A"
    INTEREST = "I"
    PURCHASE = "P"
    LOYALTY = "L"


AIPL_NAMES_ZH: dict[AiplStage, str] = {
    AiplStage.AWARENESS: "认知",
    AiplStage.INTEREST: "兴趣",
    AiplStage.PURCHASE: "购买",
    AiplStage.LOYALTY: "忠诚",
}


@dataclass(frozen=True, slots=True)
class AiplPolicy:
    """Interest: at least `interest_min_engagements` chats/shares by the customer.
    Loyalty: at least `loyalty_min_orders` orders inside the RFM window (repurchase)."""

    interest_min_engagements: int = 1
    loyalty_min_orders: int = 2

    def __post_init__(self) -> None:
        if self.interest_min_engagements < 1 or self.loyalty_min_orders < 2:
            raise ValueError(
                "interest_min_engagements must be >= 1 and loyalty_min_orders >= 2, got "
                f"{self.interest_min_engagements}, {self.loyalty_min_orders}"
            )


# Bound once: reading a member off its enum class goes through a descriptor (~50 ns).
_AWARENESS, _INTEREST, _PURCHASE, _LOYALTY = (
    AiplStage.AWARENESS,
    AiplStage.INTEREST,
    AiplStage.PURCHASE,
    AiplStage.LOYALTY,
)


def aipl_stage(
    engagements: int, lifetime_orders: int, window_orders: int, policy: AiplPolicy
) -> AiplStage:
    """The stage a customer is in; the rule that put them there is the stage's name."""
    if window_orders >= policy.loyalty_min_orders:
        return _LOYALTY
    if lifetime_orders >= 1:
        return _PURCHASE
    if engagements >= policy.interest_min_engagements:
        return _INTEREST
    return _AWARENESS
