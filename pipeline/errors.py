"""Rejections as values: one reason code feeds the DLQ header, the metric label and the CLI."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    TRUNCATED = "truncated"  # fewer bytes than the wire format's header, or a cut Avro body
    BAD_MAGIC = "bad_magic"  # first byte is not the Confluent magic byte 0
    UNKNOWN_SCHEMA = "unknown_schema"  # schema id not in the registry
    MALFORMED = "malformed"  # Avro body does not decode with its schema
    UNKNOWN_TYPE = "unknown_type"  # `type` is not an event type touchflow knows
    TYPE_MISMATCH = "type_mismatch"  # `type` disagrees with the payload record
    MISSING_FIELD = "missing_field"  # a required value is empty
    BAD_AMOUNT = "bad_amount"  # negative or absurd amount
    BAD_TIMESTAMP = "bad_timestamp"  # far in the future or before the brand existed
    UNKNOWN_BRAND = "unknown_brand"  # brand not configured
    TOO_LARGE = "too_large"  # message bigger than the configured limit
    RAW_PII = "raw_pii"  # a personal id arrived without its keyed hash


class Rejected(Exception):
    """An input that cannot be processed; carries the reason code and a readable message."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
