"""Live per-person lookup: the pure part (no I/O, no Faust).

What the worker API (`agents/lookup.py`) answers for `GET /v1/brands/{brand}/people/{id}`:
the person's state for one brand, the hashed channel identities and the last segment
changes kept in a small per-person *profile*, and how a request is authorised. See
docs/lookup.md for the JSON shape and the reasons behind it.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipeline import validation
from pipeline.state import PersonState, SegmentChange

MAX_IDENTITIES = 32  # hashed channel ids kept per person; a person has a handful
BEARER = "Bearer "


class Denied(StrEnum):
    """Why a request gets no answer: the code in the JSON body (`error`) and the status."""

    DISABLED = "api_disabled"  # 503: no token configured, so the API is off
    UNAUTHENTICATED = "unauthenticated"  # 401: no or wrong bearer token
    BAD_BRAND = "bad_brand"  # 400: not a brand slug, or not an accepted brand
    BAD_PERSON = "bad_person"  # 400: not a person id


STATUS = {
    Denied.DISABLED: 503,
    Denied.UNAUTHENTICATED: 401,
    Denied.BAD_BRAND: 400,
    Denied.BAD_PERSON: 400,
}


def authorise(authorization: str | None, token: str | None) -> Denied | None:
    """None when the Authorization header carries the configured bearer token.

    Compared in constant time (hmac.compare_digest) so the answer time does not leak how
    much of a guess was right. No token configured: the API is off, never open.
    """
    if not token:
        return Denied.DISABLED
    if not authorization or not authorization.startswith(BEARER):
        return Denied.UNAUTHENTICATED
    given = authorization[len(BEARER) :].strip().encode()
    return None if hmac.compare_digest(given, token.encode()) else Denied.UNAUTHENTICATED


def check_request(
    brand: str, person_id: str, brands: frozenset[str] | None, groups: frozenset[str]
) -> Denied | None:
    """Brand: a slug, and one of the accepted brands or brand groups when those are listed.
    Person: a slug too (person ids are `p` + hex); anything else cannot be a table key."""
    if not validation.SLUG.match(brand) or (
        brands is not None and brand not in brands and brand not in groups
    ):
        return Denied.BAD_BRAND
    if not validation.SLUG.match(person_id):
        return Denied.BAD_PERSON
    return None


# -- the profile: what the state does not keep --------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    id_type: str
    id: str  # the keyed hash (pipeline.pii), never a raw value
    channels: tuple[str, ...] = ()  # channels it was seen on, sorted


@dataclass(frozen=True, slots=True)
class Profile:
    """Per person, beside the state: hashed identities seen, people merged into this one,
    and the last segment changes per brand (newest last, at most `limit` each)."""

    identities: tuple[Identity, ...] = ()
    merged_from: tuple[str, ...] = ()
    changes: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)


def with_identity(p: Profile, id_type: str, id_: str, channel: str | None) -> Profile:
    """The profile having seen `(id_type, id_)` (on `channel`, if known); bounded."""
    found = next((i for i in p.identities if (i.id_type, i.id) == (id_type, id_)), None)
    if found is not None:
        if channel is None or channel in found.channels:
            return p
        updated = Identity(id_type, id_, tuple(sorted({*found.channels, channel})))
        rest = tuple(updated if i is found else i for i in p.identities)
        return Profile(rest, p.merged_from, p.changes)
    if len(p.identities) >= MAX_IDENTITIES:
        return p  # the first ones seen stay: an id flood must not push the real ones out
    new = Identity(id_type, id_, (channel,) if channel else ())
    return Profile((*p.identities, new), p.merged_from, p.changes)


def with_merged(p: Profile, absorbed: str) -> Profile:
    if absorbed in p.merged_from:
        return p
    return Profile(p.identities, tuple(sorted({*p.merged_from, absorbed})), p.changes)


def change_json(c: SegmentChange) -> dict[str, Any]:
    return {
        "seq": c.seq,
        "dimension": c.dimension,
        "from": c.from_value,
        "to": c.to_value,
        "rule": c.rule,
        "cause": c.cause_event_id,
        "at": c.event_time,
        "policy_version": c.policy_version,
    }


def with_change(p: Profile, c: SegmentChange, limit: int) -> Profile:
    """The profile with change `c` among the last `limit` of its brand, ordered by seq; a
    redelivered change (same seq) is kept once."""
    if limit <= 0:
        return p
    kept = [x for x in p.changes.get(c.brand, ()) if x["seq"] != c.seq]
    kept.append(change_json(c))
    kept.sort(key=lambda x: int(x["seq"]))
    changes = {**p.changes, c.brand: tuple(kept[-limit:])}
    return Profile(p.identities, p.merged_from, changes)


def profile_to_json(p: Profile) -> dict[str, Any]:
    return {
        "identities": [[i.id_type, i.id, list(i.channels)] for i in p.identities],
        "merged_from": list(p.merged_from),
        "changes": {b: list(cs) for b, cs in p.changes.items()},
    }


def profile_from_json(data: Mapping[str, Any] | None) -> Profile:
    if not data:
        return Profile()
    return Profile(
        identities=tuple(Identity(t, i, tuple(ch)) for t, i, ch in data.get("identities", ())),
        merged_from=tuple(data.get("merged_from", ())),
        changes={b: tuple(cs) for b, cs in data.get("changes", {}).items()},
    )


# -- the answer ------------------------------------------------------------------------------


def person_answer(
    brand: str,
    person_id: str,
    state: PersonState | None,
    profile: Profile,
    resolves_to: str | None,
) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body for one (brand, person).

    `resolves_to`: the person this id now belongs to, when it is an absorbed person or a
    channel identity (seed) linked to another person; the caller may ask again there.
    404 when there is neither a state for this brand nor a forwarding address.
    """
    body: dict[str, Any] = {"brand": brand, "person_id": person_id}
    if resolves_to is not None and resolves_to != person_id:
        body.update(found=False, resolves_to=resolves_to)
        return 200, body
    if state is None:
        body.update(found=False, error="unknown_person")
        return 404, body
    a, d = state.agg, state.derived
    body.update(
        found=True,
        as_of=state.as_of,
        rfm={"r": d.scores.r, "f": d.scores.f, "m": d.scores.m, "segment": d.rfm_segment},
        aipl_stage=d.aipl_stage,
        lifecycle=d.lifecycle,
        tags=list(d.tags),
        layers=dict(d.layers),
        activity={
            "first_seen": a.first_seen,
            "last_seen": a.last_seen,
            "lifetime_orders": a.lifetime_orders,
            "lifetime_amount_minor": a.lifetime_amount_minor,
            "engagements": a.engagements,
        },
        identities=[
            {"id_type": i.id_type, "id": i.id, "channels": list(i.channels)}
            for i in profile.identities
        ],
        merged_from=list(profile.merged_from),
        recent_changes=list(profile.changes.get(brand, ())),
        seq=state.seq,
    )
    return 200, body


def summary_lines(body: Mapping[str, Any]) -> list[str]:
    """A readable summary of an answer, for `touchflow whois`."""
    who = f"{body.get('person_id')} @ {body.get('brand')}"
    if not body.get("found"):
        return [f"{who}: {body.get('error', 'not found')}"]
    rfm = body["rfm"]
    tags = ", ".join(body["tags"]) or "-"
    layers = ", ".join(f"{k}={v}" for k, v in body["layers"].items()) or "-"
    lines = [
        who + (f"  (served by {body['served_by']})" if body.get("served_by") else ""),
        f"  RFM        {rfm['segment'] or '-'}  (R{rfm['r']} F{rfm['f']} M{rfm['m']})",
        f"  AIPL       {body['aipl_stage']}",
        f"  lifecycle  {body['lifecycle'] or '-'}",
        f"  tags       {tags}",
        f"  layers     {layers}",
        f"  orders     {body['activity']['lifetime_orders']}"
        f"  amount {body['activity']['lifetime_amount_minor']} (minor units)",
    ]
    for i in body["identities"]:
        lines.append(f"  identity   {i['id_type']} {i['id']}  {' '.join(i['channels'])}".rstrip())
    if body["merged_from"]:
        lines.append(f"  merged     {', '.join(body['merged_from'])}")
    changes: Sequence[Mapping[str, Any]] = body["recent_changes"]
    for c in changes:
        lines.append(
            f"  change #{c['seq']:<3} {c['dimension']}: {c['from'] or '-'} -> {c['to'] or '-'}"
            f"  ({c['rule']}; {c['cause']})"
        )
    return lines
