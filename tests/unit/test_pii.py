"""Pseudonymisation at the edge, and the person id derived from a (hashed) identity."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.events import UserRef
from pipeline.identity import partition_key, person_id_for
from pipeline.pii import PiiKeyError, is_pseudonymised, pseudonymise

KEY = b"k" * 32
OTHER_KEY = b"j" * 32
HEX = set(string.hexdigits.lower())


def test_same_key_same_hash() -> None:
    assert pseudonymise("openid", "oUpF8uMuAJO", KEY) == pseudonymise("openid", "oUpF8uMuAJO", KEY)


def test_hash_is_the_versioned_prefix_and_32_hex_digits() -> None:
    h = pseudonymise("openid", "oUpF8uMuAJO", KEY)
    assert h.startswith("h1:")
    assert len(h) == 35
    assert set(h[3:]) <= HEX
    assert is_pseudonymised(h)


def test_nothing_near_a_hash_passes() -> None:
    for h in [pseudonymise("openid", f"u{i}", KEY) for i in range(20)]:
        assert is_pseudonymised(h)
        for near in (h.upper(), h[:-1], h + "0", h[:-1] + "g", " " + h, h + "\n", "h2" + h[2:]):
            assert not is_pseudonymised(near), near


class _Text(str):
    """A str subclass: checked by the pattern."""


_hex32 = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
_one_off = st.builds(  # a hash with one character just outside the ranges (or a far one)
    lambda body, i, c: "h1:" + body[:i] + c + body[i + 1 :],
    _hex32,
    st.integers(0, 31),
    st.sampled_from(["/", ":", "`", "g", "@", "G", "A", "F", " ", "\u0663", "\uff10", "\uff41"]),
)
_near_hash = st.one_of(
    _hex32.map(lambda body: "h1:" + body),  # a hash
    _one_off,
    st.builds(lambda p, body: p + body, st.sampled_from(["h2:", "H1:", "h1", "h1::", ""]), _hex32),
    _hex32.map(lambda body: "h1:" + body[:-1]),
    _hex32.map(lambda body: "h1:" + body + "0"),
)


@settings(max_examples=500, deadline=None)
@given(value=st.one_of(_near_hash, st.text(max_size=40), _near_hash.map(_Text)))
def test_is_pseudonymised_is_the_pattern_for_any_text(value: str) -> None:
    """The character loop (compiled) says what the pattern says: no other digits (Arabic-
    Indic, fullwidth), no capitals, no other prefix or length."""
    from pipeline.pii import _PSEUDONYM

    assert is_pseudonymised(value) == (_PSEUDONYM.fullmatch(value) is not None)


def test_different_keys_give_different_hashes() -> None:
    assert pseudonymise("openid", "oUpF8uMuAJO", KEY) != pseudonymise(
        "openid", "oUpF8uMuAJO", OTHER_KEY
    )


def test_the_id_type_is_part_of_the_hash() -> None:
    assert pseudonymise("openid", "same", KEY) != pseudonymise("unionid", "same", KEY)


@pytest.mark.parametrize(
    "spelling",
    ["+86 138-0013-8000", "0086 13800138000", "13800138000", " 138 0013 8000 ", "+8613800138000"],
)
def test_phone_spellings_give_one_hash(spelling: str) -> None:
    assert pseudonymise("phone", spelling, KEY) == pseudonymise("phone", "13800138000", KEY)


def test_different_phones_give_different_hashes() -> None:
    assert pseudonymise("phone", "13800138000", KEY) != pseudonymise("phone", "13800138001", KEY)


def test_surrounding_spaces_do_not_change_an_id() -> None:
    assert pseudonymise("openid", "  abc  ", KEY) == pseudonymise("openid", "abc", KEY)


def test_pseudonymise_is_idempotent_on_a_hash() -> None:
    h = pseudonymise("openid", "oUpF8uMuAJO", KEY)
    assert pseudonymise("openid", h, KEY) == h
    assert pseudonymise("openid", h, OTHER_KEY) == h


def test_a_raw_value_that_merely_starts_with_the_prefix_is_still_hashed() -> None:
    """Only a well-formed hash may pass through untouched; anything else is a raw value."""
    out = pseudonymise("phone", "h1:13800138000", KEY)
    assert "13800138000" not in out
    assert is_pseudonymised(out)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["openid", "unionid", "external_userid", "member_id"]),
    st.text(min_size=8, max_size=40).filter(lambda v: not v.startswith("h1:") and v.strip()),
)
def test_the_raw_value_never_appears_in_the_hash(id_type: str, raw: str) -> None:
    out = pseudonymise(id_type, raw, KEY)
    assert raw.strip() not in out
    assert is_pseudonymised(out)
    assert pseudonymise(id_type, out, KEY) == out


@pytest.mark.parametrize("key", [b"", b"short", b"x" * 15])
def test_a_short_key_is_refused(key: bytes) -> None:
    with pytest.raises(PiiKeyError, match="16 bytes"):
        pseudonymise("openid", "oUpF8uMuAJO", key)


def test_a_16_byte_key_is_enough() -> None:
    assert is_pseudonymised(pseudonymise("openid", "oUpF8uMuAJO", b"x" * 16))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("h1:" + "0" * 32, True),
        ("h1:" + "0" * 31, False),
        ("h1:" + "0" * 33, False),
        ("h2:" + "0" * 32, False),
        ("0" * 35, False),
        ("", False),
        ("h1:" + "0123456789abcdef" * 2, True),
        ("h1:" + "0123456789ABCDEF" * 2, False),
        ("h1:" + "0" * 31 + "g", False),
        ("h1:" + "0" * 32 + "\n", False),
        ("h1:" + "0" * 31 + "\u0663", False),  # a digit, not an ASCII one
        ("xh1:" + "0" * 32, False),
        ("h1:" + "0" * 16 + " " + "0" * 15, False),
    ],
)
def test_is_pseudonymised(value: str, expected: bool) -> None:
    assert is_pseudonymised(value) is expected


# -- identity -----------------------------------------------------------------------------

H = "h1:" + "0123456789abcdef" * 2


def test_person_id_is_deterministic_and_well_formed() -> None:
    a = person_id_for(UserRef("openid", H))
    assert a == person_id_for(UserRef("openid", H))
    assert a.startswith("p")
    assert len(a) == 17
    assert set(a[1:]) <= HEX


def test_person_id_differs_by_id_type_and_by_id() -> None:
    ids = {
        person_id_for(UserRef("openid", H)),
        person_id_for(UserRef("unionid", H)),
        person_id_for(UserRef("openid", "h1:" + "f" * 32)),
    }
    assert len(ids) == 3


def test_partition_key_is_stable_per_person_and_differs_between_people() -> None:
    a = partition_key(UserRef("openid", H))
    assert isinstance(a, bytes)
    assert a == partition_key(UserRef("openid", H))
    assert a != partition_key(UserRef("unionid", H))
