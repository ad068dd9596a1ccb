"""Audience definitions: checked before any query; the member filter per dimension."""

from __future__ import annotations

import pytest

from pipeline import audience
from pipeline.audience import AudienceError


def test_dimensions_and_their_member_filter() -> None:
    a = audience.audience_for("lumi", "rfm_segment", "important_value", {})
    assert "rfm_segment = {segment:String}" in audience.members_query(a)
    t = audience.audience_for("lumi", "tag", "vip", {})
    assert "has(tags, {segment:String})" in audience.members_query(t)
    layer = audience.audience_for("lumi", "layer:value", "high", {})
    assert "layers[{layer:String}] = {segment:String}" in audience.members_query(layer)
    assert audience.parameters(layer)["layer"] == "value"
    assert audience.parameters(layer)["segment"] == "high"


@pytest.mark.parametrize(
    ("brand", "dimension", "segment", "why"),
    [
        ("lumi", "rfm", "x", "dimension"),
        ("lumi", "rfm_segment; DROP TABLE events", "x", "dimension"),
        ("lumi", "layer:", "x", "dimension"),
        ("lumi", "layer:a b", "x", "dimension"),
        ("-lumi", "tag", "vip", "brand"),
        ("lumi", "tag", "", "segment"),
    ],
)
def test_bad_audiences_are_refused(brand: str, dimension: str, segment: str, why: str) -> None:
    with pytest.raises(AudienceError, match=why):
        audience.audience_for(brand, dimension, segment, {})


def test_a_brand_group_takes_its_members_ids_from_its_brands_events() -> None:
    a = audience.audience_for("house", "aipl_stage", "L", {"house": ["mosu", "lumi"]})
    assert a.event_brands == ("lumi", "mosu")
    assert audience.audience_for("lumi", "aipl_stage", "L", {}).event_brands == ("lumi",)


def test_id_type_filter_only_when_asked() -> None:
    plain = audience.audience_for("lumi", "aipl_stage", "L", {})
    assert "id_types" not in audience.export_query(plain)
    only = audience.audience_for("lumi", "aipl_stage", "L", {}, ["openid", "openid"])
    assert only.id_types == ("openid",)
    assert "id_type IN {id_types:Array(String)}" in audience.export_query(only)
