"""Pseudonymisation at the edge: raw channel ids and phone numbers become keyed hashes.

Keyed BLAKE2b (a MAC) rather than a plain hash: without the key nobody can rebuild the
table phone -> hash by hashing all phone numbers. The key comes from the environment
(TOUCHFLOW_PII_KEY), never from the repo.
"""

from __future__ import annotations

import hashlib
import re

# Identity kinds whose values are personal data and must never leave the edge in clear.
PERSONAL_ID_TYPES = frozenset({"openid", "unionid", "external_userid", "member_id", "phone"})

HASH_PREFIX = "h1:"  # version of the scheme; a re-keyed hash gets a new prefix


class PiiKeyError(ValueError):
    pass


def check_key(key: bytes) -> bytes:
    if len(key) < 16:
        raise PiiKeyError("the PII key must be at least 16 bytes (set TOUCHFLOW_PII_KEY)")
    return key[:64]


def normalise(id_type: str, value: str) -> str:
    """One spelling per identity, so the same phone or id always gives the same hash."""
    value = value.strip()
    if id_type == "phone":
        digits = "".join(ch for ch in value if ch.isdigit())
        # Mainland numbers arrive as 138..., +86 138... or 0086 138...: keep the 11 digits.
        if len(digits) == 13 and digits.startswith("86"):
            digits = digits[2:]
        elif len(digits) == 15 and digits.startswith("0086"):
            digits = digits[4:]
        return digits
    return value


def pseudonymise(id_type: str, value: str, key: bytes) -> str:
    """The keyed hash that stands for `value` everywhere downstream (idempotent)."""
    if is_pseudonymised(value):
        return value
    digest = hashlib.blake2b(
        f"{id_type}\x1f{normalise(id_type, value)}".encode(),
        key=check_key(key),
        digest_size=16,
    ).hexdigest()
    return HASH_PREFIX + digest


# One C call per id (the worker checks every event's): a set of the digest per call was
# ~1.5 % of a busy worker. ASCII ranges in a str pattern: no other digits match. This
# module is compiled with the core (docs/compiled-core.md), so the call costs no frame.
_PSEUDONYM = re.compile(re.escape(HASH_PREFIX) + "[0-9a-f]{32}")

# Ids found to be keyed hashes lately: the same customers come back, and a set lookup
# costs a tenth of the pattern. Bounded: emptied when full (16k ids, about 2 MB).
_KNOWN: set[str] = set()
_KNOWN_KEPT = 1 << 14


def is_pseudonymised(value: str) -> bool:
    """True for exactly what `pseudonymise` produces: the prefix and 32 lowercase hex digits."""
    if value in _KNOWN:
        return True
    if _PSEUDONYM.fullmatch(value) is None:
        return False
    if len(_KNOWN) >= _KNOWN_KEPT:
        _KNOWN.clear()
    _KNOWN.add(value)
    return True
