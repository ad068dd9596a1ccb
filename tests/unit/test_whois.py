"""The lookup API's pure part: who may ask, what is kept beside the state, what is answered."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline import whois
from pipeline.state import Derived, PersonState, Scores, SegmentChange
from pipeline.whois import Denied, Profile

TOKEN = "s3cret-token-0123456789"


def test_only_the_configured_bearer_token_is_let_in() -> None:
    assert whois.authorise(f"Bearer {TOKEN}", TOKEN) is None
    assert whois.authorise(f"Bearer {TOKEN} ", TOKEN) is None  # trailing space tolerated
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ", "bearer x"):
        assert whois.authorise(header, TOKEN) is Denied.UNAUTHENTICATED, header


def test_without_a_configured_token_the_api_is_off_not_open() -> None:
    assert whois.authorise(f"Bearer {TOKEN}", None) is Denied.DISABLED
    assert whois.authorise("Bearer ", "") is Denied.DISABLED
    assert whois.STATUS[Denied.DISABLED] == 503
    assert whois.STATUS[Denied.UNAUTHENTICATED] == 401


def test_brand_and_person_are_checked() -> None:
    none: frozenset[str] = frozenset()
    assert whois.check_request("lumi", "p0123", None, none) is None
    assert whois.check_request("-lumi", "p0123", None, none) is Denied.BAD_BRAND
    assert whois.check_request("lumi", "p0123", frozenset({"mosu"}), none) is Denied.BAD_BRAND
    assert whois.check_request("house", "p0123", frozenset({"lumi"}), frozenset({"house"})) is None
    assert whois.check_request("lumi", "../etc", None, none) is Denied.BAD_PERSON


def change(seq: int, brand: str = "lumi") -> SegmentChange:
    return SegmentChange(
        brand, "p1", "aipl_stage", "A", "P", "aipl:P", f"e{seq}", 1000 * seq, seq,
        Scores(), Scores(5, 1, 2), "v1",
    )  # fmt: skip


def test_the_last_changes_are_kept_per_brand_in_seq_order_once_each() -> None:
    p = Profile()
    for seq in (3, 1, 2, 4, 2):  # out of order, and 2 redelivered
        p = whois.with_change(p, change(seq), limit=3)
    p = whois.with_change(p, change(1, brand="mosu"), limit=3)
    assert [c["seq"] for c in p.changes["lumi"]] == [2, 3, 4]
    assert [c["seq"] for c in p.changes["mosu"]] == [1]
    assert whois.with_change(p, change(9), limit=0) == p


def test_identities_gather_channels_and_stay_bounded() -> None:
    p = whois.with_identity(Profile(), "openid", "h1:a", "wechat_mp")
    p = whois.with_identity(p, "openid", "h1:a", "mini_program")
    p = whois.with_identity(p, "openid", "h1:a", None)
    p = whois.with_identity(p, "phone", "h1:b", None)
    assert [(i.id_type, i.id, i.channels) for i in p.identities] == [
        ("openid", "h1:a", ("mini_program", "wechat_mp")),
        ("phone", "h1:b", ()),
    ]
    for n in range(100):
        p = whois.with_identity(p, "openid", f"h1:{n}", "wechat_mp")
    assert len(p.identities) == whois.MAX_IDENTITIES
    assert p.identities[0].id == "h1:a"  # the first ones stay


@given(
    st.lists(st.tuples(st.sampled_from(["openid", "phone"]), st.text(max_size=5)), max_size=8),
    st.lists(st.text(min_size=1, max_size=4), max_size=3),
    st.lists(st.integers(1, 30), max_size=10),
)
def test_profile_survives_its_json_form(
    ids: list[tuple[str, str]], merged: list[str], seqs: list[int]
) -> None:
    p = Profile()
    for id_type, id_ in ids:
        p = whois.with_identity(p, id_type, id_, "store")
    for m in merged:
        p = whois.with_merged(p, m)
    for seq in seqs:
        p = whois.with_change(p, change(seq), limit=5)
    assert whois.profile_from_json(whois.profile_to_json(p)) == p


def test_answer_found_unknown_and_forwarded() -> None:
    state = PersonState(
        seq=2,
        as_of=5000,
        derived=Derived(
            scores=Scores(5, 1, 2), rfm_segment="general_develop", aipl_stage="P",
            lifecycle="new", tags=("vip",), layers=(("value", "mid"),),
        ),
    )  # fmt: skip
    profile = whois.with_change(
        whois.with_identity(Profile(), "openid", "h1:a", "wx"), change(2), 5
    )
    status, body = whois.person_answer("lumi", "p1", state, profile, None)
    assert status == 200 and body["found"] is True
    assert body["rfm"] == {"r": 5, "f": 1, "m": 2, "segment": "general_develop"}
    assert (body["aipl_stage"], body["lifecycle"], body["tags"]) == ("P", "new", ["vip"])
    assert body["layers"] == {"value": "mid"}
    assert body["identities"] == [{"id_type": "openid", "id": "h1:a", "channels": ["wx"]}]
    assert [c["seq"] for c in body["recent_changes"]] == [2]
    assert whois.person_answer("mosu", "p1", None, profile, None)[0] == 404
    status, body = whois.person_answer("lumi", "p9", None, Profile(), "p1")
    assert (status, body["resolves_to"], body["found"]) == (200, "p1", False)
    # An id resolving to itself is no forwarding address.
    assert whois.person_answer("lumi", "p1", None, Profile(), "p1")[0] == 404
    lines = whois.summary_lines(whois.person_answer("lumi", "p1", state, profile, None)[1])
    assert any("general_develop" in line and "R5 F1 M2" in line for line in lines)
