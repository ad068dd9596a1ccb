"""Brand RFM thresholds computed from quantiles, as messages on the thresholds topic. Pure.

The topic is compacted and keyed by brand, so it always holds each brand's latest
thresholds; workers read it from the start and keep following it. JSON, not Avro: it is
a handful of small configuration records, read by people as often as by code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipeline.rfm import RfmPolicy


@dataclass(frozen=True, slots=True)
class BrandThresholds:
    brand: str
    policy: RfmPolicy
    buyers: int  # how many buyers the quantiles were taken over
    computed_at: int  # ms

    def encode(self) -> tuple[bytes, bytes]:
        value = {
            "recency_days": list(self.policy.recency_days),
            "frequency_orders": list(self.policy.frequency_orders),
            "monetary_minor": list(self.policy.monetary_minor),
            "window_days": self.policy.window_days,
            "high_score": self.policy.high_score,
            "buyers": self.buyers,
            "computed_at": self.computed_at,
        }
        return self.brand.encode(), json.dumps(value, sort_keys=True).encode()


def decode(key: bytes, value: bytes) -> BrandThresholds:
    """A thresholds record; ValueError (with what is wrong) when it is not one."""
    try:
        v = json.loads(value)
        policy = RfmPolicy(
            window_days=int(v["window_days"]),
            recency_days=tuple(v["recency_days"]),
            frequency_orders=tuple(v["frequency_orders"]),
            monetary_minor=tuple(v["monetary_minor"]),
            high_score=int(v["high_score"]),
        )
        return BrandThresholds(key.decode(), policy, int(v["buyers"]), int(v["computed_at"]))
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a thresholds record: {exc!r}") from None


def applies_to(brand: str, quantile_brands: list[str]) -> bool:
    return "*" in quantile_brands or brand in quantile_brands
