"""Channel identity -> person id. Deterministic: the same identity gives the same person.

The foundation resolves each (id_type, hashed id) to its own person. Cross-channel
linking and merges (identify events) build on `person_id_for` as the seed of a person.
"""

from __future__ import annotations

import hashlib

from pipeline.events import UserRef


def person_id_for(user: UserRef) -> str:
    digest = hashlib.blake2b(f"{user.id_type}\x1f{user.id}".encode(), digest_size=8).hexdigest()
    return "p" + digest


def partition_key(user: UserRef) -> bytes:
    """Kafka message key: all of a person's events, for every brand, share one partition."""
    return person_id_for(user).encode()
