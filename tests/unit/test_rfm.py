"""RFM: threshold boundaries, the rolling window, bucket upkeep, the eight segments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import rfm
from pipeline.rfm import RfmPolicy, RfmScores, RfmSegment

TODAY = 20_000  # a day number (days since the Unix epoch); its value is arbitrary

# The classic thresholds, spelled out so the literal tables below do not hang on defaults.
CLASSIC = RfmPolicy(
    window_days=365,
    recency_days=(7, 30, 90, 180),
    frequency_orders=(2, 3, 5, 8),
    monetary_minor=(20_000, 50_000, 100_000, 300_000),
    high_score=3,
)


def _score_one_bucket(
    orders: int = 1, amount: int = 0, recency: int = 0, policy: RfmPolicy = CLASSIC
) -> RfmScores:
    """Scores of a customer with one bucket today and a last purchase `recency` days ago."""
    return rfm.score(((TODAY, orders, amount),), TODAY - recency, TODAY, policy)


# -- scores at every threshold ------------------------------------------------------------


@pytest.mark.parametrize(
    ("recency", "expected_r"),
    [
        (0, 5),
        (7, 5),
        (8, 4),
        (30, 4),
        (31, 3),
        (90, 3),
        (91, 2),
        (180, 2),
        (181, 1),
        (364, 1),
    ],
)
def test_recency_score_at_each_boundary(recency: int, expected_r: int) -> None:
    s = _score_one_bucket(recency=recency)
    assert s.r == expected_r
    assert s.recency_days == recency


@pytest.mark.parametrize(
    ("orders", "expected_f"),
    [(0, 1), (1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (7, 4), (8, 5), (50, 5)],
)
def test_frequency_score_at_each_boundary(orders: int, expected_f: int) -> None:
    s = _score_one_bucket(orders=orders)
    assert s.f == expected_f
    assert s.orders == orders


@pytest.mark.parametrize(
    ("amount", "expected_m"),
    [
        (0, 1),
        (19_999, 1),
        (20_000, 2),
        (49_999, 2),
        (50_000, 3),
        (99_999, 3),
        (100_000, 4),
        (299_999, 4),
        (300_000, 5),
        (10_000_000, 5),
    ],
)
def test_monetary_score_at_each_boundary(amount: int, expected_m: int) -> None:
    s = _score_one_bucket(amount=amount)
    assert s.m == expected_m
    assert s.amount_minor == amount


CUSTOM = RfmPolicy(
    window_days=60,
    recency_days=(3, 10, 20, 40),
    frequency_orders=(4, 6, 10, 12),
    monetary_minor=(1_000, 2_000, 4_000, 8_000),
    high_score=4,
)


@pytest.mark.parametrize("k", range(4))
def test_scores_follow_a_configured_policy_threshold_by_threshold(k: int) -> None:
    """At threshold k: recency scores 5-k (and one day more scores 4-k); F and M score k+2
    at the threshold and k+1 one below it."""
    r_at = CUSTOM.recency_days[k]
    assert _score_one_bucket(recency=r_at, policy=CUSTOM).r == 5 - k
    assert _score_one_bucket(recency=r_at + 1, policy=CUSTOM).r == 4 - k
    f_at = CUSTOM.frequency_orders[k]
    assert _score_one_bucket(orders=f_at, policy=CUSTOM).f == k + 2
    assert _score_one_bucket(orders=f_at - 1, policy=CUSTOM).f == k + 1
    m_at = CUSTOM.monetary_minor[k]
    assert _score_one_bucket(amount=m_at, policy=CUSTOM).m == k + 2
    assert _score_one_bucket(amount=m_at - 1, policy=CUSTOM).m == k + 1


def test_recency_is_never_negative() -> None:
    """A last purchase "after" today (clock skew) counts as today."""
    s = rfm.score(((TODAY, 1, 0),), TODAY + 3, TODAY, CLASSIC)
    assert s.recency_days == 0
    assert s.r == 5


# -- the window ---------------------------------------------------------------------------


def test_window_counts_the_bucket_window_days_minus_one_back_but_not_window_days_back() -> None:
    policy = RfmPolicy(window_days=30)
    buckets = (
        (TODAY - 30, 100, 1_000_000),  # one day too old: must not count
        (TODAY - 29, 2, 30_000),  # first day of the window
        (TODAY, 1, 5_000),
    )
    s = rfm.score(buckets, TODAY, TODAY, policy)
    assert (s.orders, s.amount_minor) == (3, 35_000)
    assert (s.f, s.m) == (3, 2)


def test_window_ignores_buckets_after_today() -> None:
    s = rfm.score(((TODAY, 1, 100), (TODAY + 1, 9, 900_000)), TODAY, TODAY, CLASSIC)
    assert (s.orders, s.amount_minor) == (1, 100)


def test_trim_drops_exactly_the_buckets_outside_the_window() -> None:
    buckets = ((TODAY - 31, 1, 1), (TODAY - 30, 1, 2), (TODAY - 29, 1, 3), (TODAY, 1, 4))
    assert rfm.trim(buckets, TODAY, 30) == ((TODAY - 29, 1, 3), (TODAY, 1, 4))


def test_trim_keeps_everything_inside_and_drops_everything_outside() -> None:
    inside = ((TODAY - 29, 1, 3), (TODAY, 1, 4))
    assert rfm.trim(inside, TODAY, 30) == inside
    assert rfm.trim(((TODAY - 40, 1, 3), (TODAY - 30, 1, 4)), TODAY, 30) == ()
    assert rfm.trim((), TODAY, 30) == ()


def test_trim_with_a_one_day_window_keeps_only_today() -> None:
    assert rfm.trim(((TODAY - 1, 1, 1), (TODAY, 2, 2)), TODAY, 1) == ((TODAY, 2, 2),)


# -- add_purchase -------------------------------------------------------------------------


def test_add_purchase_to_no_buckets() -> None:
    assert rfm.add_purchase((), 10, 1, 500) == ((10, 1, 500),)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (5, ((5, 1, 7), (10, 1, 100), (20, 2, 200))),
        (15, ((10, 1, 100), (15, 1, 7), (20, 2, 200))),
        (25, ((10, 1, 100), (20, 2, 200), (25, 1, 7))),
        (10, ((10, 2, 107), (20, 2, 200))),
        (20, ((10, 1, 100), (20, 3, 207))),
    ],
    ids=["before", "between", "after", "merge-first", "merge-last"],
)
def test_add_purchase_keeps_buckets_sorted_and_merges_the_same_day(
    day: int, expected: tuple[rfm.Bucket, ...]
) -> None:
    buckets = ((10, 1, 100), (20, 2, 200))
    assert rfm.add_purchase(buckets, day, 1, 7) == expected


def test_add_purchase_with_negative_counts_takes_off_the_day() -> None:
    """How refunds use it: a whole refund of one order on day 20."""
    assert rfm.add_purchase(((10, 1, 100), (20, 2, 200)), 20, -1, -150) == (
        (10, 1, 100),
        (20, 1, 50),
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(1, 3), st.integers(0, 10_000)),
        max_size=30,
    )
)
def test_add_purchase_keeps_one_sorted_bucket_per_day_with_the_totals(
    purchases: list[tuple[int, int, int]],
) -> None:
    buckets: tuple[rfm.Bucket, ...] = ()
    for day, orders, amount in purchases:
        buckets = rfm.add_purchase(buckets, day, orders, amount)
    days = [d for d, _, _ in buckets]
    assert days == sorted(set(days))
    for d, o, a in buckets:
        assert o == sum(po for pd, po, _ in purchases if pd == d)
        assert a == sum(pa for pd, _, pa in purchases if pd == d)
    assert set(days) == {pd for pd, _, _ in purchases}


sorted_buckets = st.dictionaries(
    st.integers(0, 400), st.tuples(st.integers(-2, 5), st.integers(-500, 10_000)), max_size=40
).map(lambda days: tuple((d, o, a) for d, (o, a) in sorted(days.items())))


@settings(max_examples=200, deadline=None)
@given(sorted_buckets, st.integers(0, 420), st.integers(1, 400))
def test_trim_and_window_count_exactly_the_days_inside_the_window(
    buckets: tuple[rfm.Bucket, ...], today: int, window_days: int
) -> None:
    first = today - window_days + 1
    trimmed = rfm.trim(buckets, today, window_days)
    assert [b for b in buckets if b[0] >= first] == list(trimmed)
    if all(b[0] >= first for b in buckets):
        assert trimmed is buckets  # nothing left the window: the state keeps its tuple
    w = rfm.window(buckets, today, RfmPolicy(window_days=window_days))
    inside = [b for b in buckets if first <= b[0] <= today]
    assert (w.orders, w.amount_minor) == (sum(o for _, o, _ in inside), sum(a for *_, a in inside))


# -- segments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("r_high", "f_high", "m_high", "expected"),
    [
        (True, True, True, "important_value"),
        (True, False, True, "important_develop"),
        (False, True, True, "important_keep"),
        (False, False, True, "important_retain"),
        (True, True, False, "general_value"),
        (True, False, False, "general_develop"),
        (False, True, False, "general_keep"),
        (False, False, False, "general_retain"),
    ],
)
@pytest.mark.parametrize("high_score", [3, 4])
def test_segment_of_each_high_low_combination(
    r_high: bool, f_high: bool, m_high: bool, expected: str, high_score: int
) -> None:
    """High means exactly `high_score`, low means one below: the boundary on every axis."""
    policy = RfmPolicy(high_score=high_score)

    def level(high: bool) -> int:
        return high_score if high else high_score - 1

    scores = RfmScores(
        r=level(r_high), f=level(f_high), m=level(m_high), recency_days=0, orders=0, amount_minor=0
    )
    assert rfm.segment(scores, policy) == expected
    assert rfm.segment(scores, policy).value == expected


def test_every_segment_has_a_chinese_name() -> None:
    assert set(rfm.SEGMENT_NAMES_ZH) == set(RfmSegment)
    assert rfm.SEGMENT_NAMES_ZH[RfmSegment.IMPORTANT_VALUE] == "重要价值客户"
    assert rfm.SEGMENT_NAMES_ZH[RfmSegment.GENERAL_RETAIN] == "一般挽留客户"


def test_segment_from_real_scores() -> None:
    """One recent order: 350 yuan is M2 (general), 500 yuan is M3 (important)."""
    s = _score_one_bucket(orders=1, amount=35_000, recency=2)
    assert (s.r, s.f, s.m) == (5, 1, 2)
    assert rfm.segment(s, CLASSIC) == RfmSegment.GENERAL_DEVELOP
    s = _score_one_bucket(orders=1, amount=50_000, recency=2)
    assert (s.r, s.f, s.m) == (5, 1, 3)
    assert rfm.segment(s, CLASSIC) == RfmSegment.IMPORTANT_DEVELOP


# -- policy validation --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["recency_days", "frequency_orders", "monetary_minor"])
@pytest.mark.parametrize(
    "values",
    [(30, 7, 90, 180), (7, 7, 90, 180), (7, 30, 180, 90), (180, 90, 30, 7), (7, 30, 90)],
    ids=["swapped-first", "repeated", "swapped-last", "descending", "three"],
)
def test_policy_rejects_thresholds_that_are_not_four_strictly_ascending(
    field: str, values: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match=field):
        RfmPolicy(**{field: values})


@pytest.mark.parametrize("high_score", [0, 6, -1])
def test_policy_rejects_high_score_outside_1_to_5(high_score: int) -> None:
    with pytest.raises(ValueError, match="high_score"):
        RfmPolicy(high_score=high_score)


@pytest.mark.parametrize("high_score", [1, 5])
def test_policy_accepts_high_score_at_the_ends(high_score: int) -> None:
    assert RfmPolicy(high_score=high_score).high_score == high_score


@pytest.mark.parametrize("window_days", [0, -30])
def test_policy_rejects_an_empty_window(window_days: int) -> None:
    with pytest.raises(ValueError, match="window_days"):
        RfmPolicy(window_days=window_days)


# -- monotonicity -------------------------------------------------------------------------

ascending_4 = st.lists(st.integers(0, 400), min_size=4, max_size=4, unique=True).map(
    lambda v: tuple(sorted(v))
)
policies = st.builds(
    RfmPolicy,
    window_days=st.just(365),
    recency_days=ascending_4,
    frequency_orders=ascending_4,
    monetary_minor=ascending_4.map(lambda t: tuple(x * 1_000 for x in t)),
    high_score=st.integers(1, 5),
)


@settings(max_examples=200, deadline=None)
@given(policies, st.integers(0, 500), st.integers(0, 500))
def test_frequency_score_is_monotone_in_orders(policy: RfmPolicy, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    f_lo = _score_one_bucket(orders=lo, policy=policy).f
    f_hi = _score_one_bucket(orders=hi, policy=policy).f
    assert 1 <= f_lo <= f_hi <= 5


@settings(max_examples=200, deadline=None)
@given(policies, st.integers(0, 500_000), st.integers(0, 500_000))
def test_monetary_score_is_monotone_in_amount(policy: RfmPolicy, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    m_lo = _score_one_bucket(amount=lo, policy=policy).m
    m_hi = _score_one_bucket(amount=hi, policy=policy).m
    assert 1 <= m_lo <= m_hi <= 5


@settings(max_examples=200, deadline=None)
@given(policies, st.integers(0, 500), st.integers(0, 500))
def test_recency_score_does_not_rise_as_the_last_purchase_ages(
    policy: RfmPolicy, a: int, b: int
) -> None:
    near, far = sorted((a, b))
    r_near = _score_one_bucket(recency=near, policy=policy).r
    r_far = _score_one_bucket(recency=far, policy=policy).r
    assert 5 >= r_near >= r_far >= 1


@settings(max_examples=200, deadline=None)
@given(policies, st.integers(0, 500))
def test_more_days_never_raise_recency_on_the_same_history(policy: RfmPolicy, days: int) -> None:
    """The same buckets scored later: R can only fall, F and M can only fall (window)."""
    buckets = ((TODAY - 10, 2, 30_000), (TODAY, 1, 10_000))
    now = rfm.score(buckets, TODAY, TODAY, policy)
    later = rfm.score(buckets, TODAY, TODAY + days, policy)
    assert later.r <= now.r
    assert later.f <= now.f
    assert later.m <= now.m


def test_quantile_thresholds_split_buyers_in_fifths_and_stay_strictly_ascending() -> None:
    from pipeline.rfm import RfmPolicy, policy_from_quantiles, score

    base = RfmPolicy(window_days=90, high_score=4)
    p = policy_from_quantiles(
        base, [3.0, 10.5, 30, 60], [1, 1, 2, 4], [9_900, 20_000, 20_000, 150_000.2]
    )
    assert (p.window_days, p.high_score) == (90, 4)
    assert p.recency_days == (3, 11, 30, 60)
    assert p.frequency_orders == (1, 2, 3, 4)  # ties pushed up one by one
    assert p.monetary_minor == (9_900, 20_000, 20_001, 150_001)
    # a buyer at the 80th percentile of amount is in the top fifth
    top = score(((100, 1, 150_001),), 100, 100, p)
    assert (top.r, top.m) == (5, 5)
    import pytest

    with pytest.raises(ValueError, match="four quantiles"):
        policy_from_quantiles(base, [1, 2], [1, 2, 3, 4], [1, 2, 3, 4])


@settings(max_examples=300, deadline=None)
@given(
    policies, st.integers(0, 500), st.integers(0, 500), st.integers(0, 500_000), st.integers(0, 600)
)
def test_scores_are_the_thresholds_passed_counted_as_bisection_counts_them(
    policy: RfmPolicy, orders: int, days_ago: int, amount: int, today: int
) -> None:
    """Compiled, the scores count thresholds in C loops; by definition they are positions
    by bisection (at a threshold: recency scores up, frequency and monetary score up)."""
    from bisect import bisect_left, bisect_right

    s = rfm.score_window(rfm.Window(orders, amount), today - days_ago, today, policy)
    assert s.r == 5 - bisect_left(policy.recency_days, days_ago)
    assert s.f == 1 + bisect_right(policy.frequency_orders, orders)
    assert s.m == 1 + bisect_right(policy.monetary_minor, amount)
    assert (s.recency_days, s.orders, s.amount_minor) == (days_ago, orders, amount)
    high = policy.high_score
    assert rfm.segment(s, policy) == rfm._SEGMENT_BY_HIGH[(s.r >= high, s.f >= high, s.m >= high)]
