"""What every consumer of the events topic does first: size, wire format, schema, contract.

Shared by the segmentation agent and the ClickHouse sink so both accept exactly the same
events. Pure: the caller passes the clock.
"""

from __future__ import annotations

from pipeline.codec import Codecs
from pipeline.events import Touchpoint
from pipeline.validation import Limits, check_size, validate


def accept(raw: bytes | None, now_ms: int, codecs: Codecs, limits: Limits) -> Touchpoint:
    """The typed event in `raw`, or Rejected with the reason it breaks the contract."""
    data = raw or b""
    check_size(len(data), limits)
    return validate(codecs.decode_event(data), now_ms, limits)
