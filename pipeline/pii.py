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


# What `pseudonymise` produces. ASCII ranges in a str pattern: no other digits match.
_PSEUDONYM = re.compile(re.escape(HASH_PREFIX) + "[0-9a-f]{32}")
_PSEUDONYM_LENGTH = len(HASH_PREFIX) + 32


def is_pseudonymised(value: str) -> bool:
    """True for exactly what `pseudonymise` produces: the prefix and 32 lowercase hex
    digits (`_PSEUDONYM`). The worker asks for every id of every event: compiled, this is
    a C loop over the characters (this module is compiled with the core, docs/compiled-
    core.md), cheaper than hashing a fresh string to look it up among ids seen before."""
    if type(value) is not str:  # a subclass: by the pattern (compiled, `text` is exact)
        return _PSEUDONYM.fullmatch(value) is not None
    text = value
    if len(text) != _PSEUDONYM_LENGTH or not text.startswith(HASH_PREFIX):
        return False
    for i in range(len(HASH_PREFIX), _PSEUDONYM_LENGTH):
        c = text[i]
        if not ("0" <= c <= "9" or "a" <= c <= "f"):
            return False
    return True
