"""The dashboard's pure part: request filters and the shapes its charts are drawn from."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline import dashboard
from pipeline.dashboard import BadRequest, Filters, Reason
from pipeline.dashboard_web import static_file

D = date.fromisoformat


def test_filters_from_query_parameters() -> None:
    got = dashboard.parse_filters({"brand": "lumi", "since": "2026-01-02", "until": "2026-01-31"})
    assert got == Filters("lumi", D("2026-01-02"), D("2026-01-31"))
    assert dashboard.parse_filters({"brand": "", "since": " ", "until": ""}) == Filters()
    one_day = {"since": "2026-01-31", "until": "2026-01-31"}
    assert dashboard.parse_filters(one_day) == Filters(None, D("2026-01-31"), D("2026-01-31"))
    assert Filters().sql_parameters() == {
        "brand": "",
        "since": D("1970-01-01"),
        "until": D("2149-06-06"),
    }


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"brand": "lumi' OR 1=1 --"}, Reason.BAD_BRAND),
        ({"since": "2026-13-01"}, Reason.BAD_DATE),
        ({"until": "yesterday"}, Reason.BAD_DATE),
        ({"since": "2026-02-01", "until": "2026-01-31"}, Reason.BAD_RANGE),
        ({"since": "2000-01-01", "until": "2026-01-31"}, Reason.BAD_RANGE),
    ],
)
def test_bad_filters_say_why(params: dict[str, str], reason: Reason) -> None:
    with pytest.raises(BadRequest) as caught:
        dashboard.parse_filters(params)
    assert caught.value.reason is reason


def test_limit_and_dimension() -> None:
    assert dashboard.parse_limit({}, default=30) == 30
    assert dashboard.parse_limit({"limit": "200"}, default=30) == 200
    for bad in ("0", "201", "-1", "ten"):
        with pytest.raises(BadRequest):
            dashboard.parse_limit({"limit": bad}, default=30)
    assert dashboard.parse_dimension({}) == "rfm_segment"
    assert dashboard.parse_dimension({"dimension": "lifecycle"}) == "lifecycle"
    with pytest.raises(BadRequest) as caught:
        dashboard.parse_dimension({"dimension": "tag"})
    assert caught.value.reason is Reason.BAD_DIMENSION


def test_rfm_matrix_sums_brands_into_the_eight_cells() -> None:
    rows = [
        ("lumi", "important_value", 3, 90_000),
        ("mosu", "important_value", 2, 10_000),
        ("lumi", "general_retain", 4, None),  # no revenue in the range
    ]
    cells = dashboard.rfm_matrix(rows)
    assert len(cells) == 8
    by_segment = {c["segment"]: c for c in cells}
    assert by_segment["important_value"] == {
        "segment": "important_value", "name": "重要价值客户", "row": 0, "col": 0,
        "r_high": True, "f_high": True, "m_high": True, "customers": 5,
        "revenue_minor": 100_000,
    }  # fmt: skip
    assert (by_segment["general_retain"]["row"], by_segment["general_retain"]["col"]) == (1, 3)
    assert by_segment["general_retain"]["customers"] == 4
    assert by_segment["general_retain"]["revenue_minor"] == 0
    assert by_segment["important_develop"]["customers"] == 0
    assert [c["segment"] for c in cells[:4]] == [
        "important_value", "important_develop", "important_keep", "important_retain",
    ]  # fmt: skip


def test_funnel_adds_channels_and_brands_and_converts_step_by_step() -> None:
    rows = [("lumi", "wecom", 10, 6, 3, 1), ("mosu", "(none)", 5, 4, 2, 1)]
    steps = dashboard.funnel(rows)
    assert [(s["stage"], s["name"], s["reached"]) for s in steps] == [
        ("A", "认知", 15), ("I", "兴趣", 10), ("P", "购买", 5), ("L", "忠诚", 2),
    ]  # fmt: skip
    assert [s["conversion"] for s in steps] == [None, 10 / 15, 5 / 10, 2 / 5]
    assert [s["conversion"] for s in dashboard.funnel([])] == [None, None, None, None]


def test_flows_sum_over_brands_biggest_first() -> None:
    rows = [
        ("lumi", "(none)", "new", 2),
        ("lumi", "active", "at_risk", 1),
        ("mosu", "(none)", "new", 3),
        ("mosu", "new", "active", 1),
    ]
    assert dashboard.flows(rows) == [
        {"from": "(none)", "to": "new", "people": 5},
        {"from": "active", "to": "at_risk", "people": 1},
        {"from": "new", "to": "active", "people": 1},
    ]


def test_sharers_top_list_and_totals() -> None:
    rows = [
        ("lumi", "*", 7, 4, 2, 1.0),
        ("lumi", "p-a", 5, 3, 1, 1.0),
        ("lumi", "p-b", 2, 1, 1, 1.0),
        ("mosu", "*", 1, 1, 0, 0.0),
        ("mosu", "p-c", 1, 1, 0, 0.0),
    ]
    got = dashboard.sharers(rows, top=2)
    # p-a and p-b both converted one invitee: more invitations first.
    assert [(s["person_id"], s["brand"]) for s in got["sharers"]] == [
        ("p-a", "lumi"), ("p-b", "lumi"),
    ]  # fmt: skip
    assert got["totals"] == {
        "invitations": 8, "invitees": 5, "converted_invitees": 2, "k_factor": None,
    }  # fmt: skip
    one_brand = dashboard.sharers(rows[:3])
    assert one_brand["totals"]["k_factor"] == 1.0
    assert dashboard.sharers([]) == {
        "sharers": [],
        "totals": {"invitations": 0, "invitees": 0, "converted_invitees": 0, "k_factor": None},
    }


def test_membership_series_carries_each_brand_over_its_quiet_days() -> None:
    d1, d2, d3 = D("2026-03-01"), D("2026-03-02"), D("2026-03-05")
    rows = [
        ("lumi", d1, "rfm_segment", "general_develop", 2),
        ("lumi", d1, "lifecycle", "new", 2),  # another dimension: not in this series
        ("mosu", d2, "rfm_segment", "general_develop", 1),
        ("mosu", d2, "rfm_segment", "important_value", 1),
        # lumi's d3: general_develop has no row any more = nobody left in it
        ("lumi", d3, "rfm_segment", "important_develop", 2),
    ]
    got = dashboard.membership_series(rows, "rfm_segment")
    assert got == {
        "days": ["2026-03-01", "2026-03-02", "2026-03-05"],
        "series": {
            "general_develop": [2, 2 + 1, 0 + 1],
            "important_develop": [0, 0, 2],
            "important_value": [0, 1, 1],
        },
    }
    assert dashboard.membership_series([], "lifecycle") == {"days": [], "series": {}}


def test_labels_name_segments_in_operators_language() -> None:
    names = dashboard.labels()
    assert names["rfm_segment"]["important_value"] == "重要价值客户"
    assert names["lifecycle"]["at_risk"] == "流失预警"
    assert names["aipl_stage"]["L"] == "忠诚"


def test_static_files_come_from_the_package_and_nothing_else() -> None:
    page = static_file("index.html")
    assert page.status == 200 and page.content_type.startswith("text/html")
    assert b"static/dashboard.js" in page.body
    assert static_file("dashboard.js").content_type.startswith("text/javascript")
    assert static_file("../dashboard.py").status == 404
    assert static_file("dashboard.py").status == 404
    assert static_file("missing.css").status == 404
