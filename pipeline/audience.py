"""Audience export: who is in a segment now, with their hashed ids per channel. Pure.

An audience is the current members of one brand's segment (`current_people`, merged-away
ids excluded) on one dimension. Each member is listed with every hashed channel identity
of theirs seen in the brand's events: events are stored under the identity's own seed
person id, and `person_of_seed` (migration 0004) maps a seed merged into someone to the
person it belongs to now. The SQL is built here; sinks/audience.py runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline import validation

DIMENSIONS = ("rfm_segment", "aipl_stage", "lifecycle", "tag")  # and layer:<name>
LAYER_PREFIX = "layer:"
COLUMNS = ("person_id", "channel", "id_type", "user_id")
FORMATS = {"csv": "CSVWithNames", "parquet": "Parquet"}  # ClickHouse output formats


class AudienceError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Audience:
    brand: str  # a brand, or a brand group (its members' events give the ids)
    dimension: str
    segment: str
    event_brands: tuple[str, ...]
    id_types: tuple[str, ...] = ()  # only these kinds of id (empty = all)


def audience_for(
    brand: str,
    dimension: str,
    segment: str,
    brand_groups: Mapping[str, Sequence[str]],
    id_types: Sequence[str] = (),
) -> Audience:
    """A validated audience; AudienceError says what is wrong."""
    if not validation.SLUG.match(brand):
        raise AudienceError(f"brand {brand!r} is not a brand slug")
    layer = dimension.removeprefix(LAYER_PREFIX)
    if dimension not in DIMENSIONS and not (
        dimension.startswith(LAYER_PREFIX) and validation.SLUG.match(layer)
    ):
        raise AudienceError(
            f"dimension {dimension!r}: one of {', '.join(DIMENSIONS)} or layer:<name>"
        )
    if not segment:
        raise AudienceError("name the segment (--segment)")
    event_brands = tuple(sorted(brand_groups.get(brand, ()))) or (brand,)
    return Audience(brand, dimension, segment, event_brands, tuple(sorted(set(id_types))))


def _member_filter(a: Audience) -> str:
    if a.dimension == "tag":
        return "has(tags, {segment:String})"
    if a.dimension.startswith(LAYER_PREFIX):
        return "layers[{layer:String}] = {segment:String}"
    return f"{a.dimension} = {{segment:String}}"  # one of DIMENSIONS: a column name


def parameters(a: Audience) -> dict[str, Any]:
    return {
        "brand": a.brand,
        "segment": a.segment,
        "layer": a.dimension.removeprefix(LAYER_PREFIX),
        "event_brands": list(a.event_brands),
        "id_types": list(a.id_types),
    }


def members_query(a: Audience) -> str:
    return (
        "SELECT person_id FROM current_people"
        f" WHERE brand = {{brand:String}} AND {_member_filter(a)}"
    )


def export_query(a: Audience) -> str:
    """One row per (member, channel, id kind, hashed id), ordered; columns COLUMNS."""
    id_filter = " AND id_type IN {id_types:Array(String)}" if a.id_types else ""
    return f"""
SELECT person AS person_id, channel, id_type, user_id
FROM (
    SELECT if(s.person_id = '', e.seed, s.person_id) AS person, e.channel AS channel,
           e.id_type AS id_type, e.user_id AS user_id
    FROM (
        SELECT DISTINCT person_id AS seed, channel, id_type, user_id
        FROM events
        WHERE brand IN {{event_brands:Array(String)}}{id_filter}
    ) AS e
    LEFT JOIN person_of_seed AS s ON s.seed = e.seed
)
WHERE person IN ({members_query(a)})
GROUP BY person, channel, id_type, user_id
ORDER BY person, id_type, user_id, channel
""".strip()


def counts_query(a: Audience) -> str:
    """(members, members with at least one id, rows) of the export."""
    return (
        f"SELECT (SELECT count() FROM ({members_query(a)})), uniqExact(person_id), count()"
        f" FROM ({export_query(a)})"
    )
