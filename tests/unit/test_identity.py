"""Identity links: who survives a merge, whatever order links arrive in."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as hs

from pipeline.events import UserRef
from pipeline.identity import decide_link, person_id_for, seed_of, survivor


def test_seed_is_the_identitys_own_person_id_and_differs_by_type() -> None:
    h = "h1:" + "0" * 32
    assert seed_of(UserRef("openid", h)) == person_id_for(UserRef("openid", h))
    assert seed_of(UserRef("openid", h)) != seed_of(UserRef("unionid", h))


def test_a_link_to_a_smaller_person_moves_the_identity_and_merges_its_person() -> None:
    assert decide_link("p9", "p1") == ("p1", "p9", None)


def test_a_link_to_a_larger_person_keeps_the_identity_and_teaches_the_claimant() -> None:
    assert decide_link("p1", "p9") == ("p1", None, "p9")


def test_a_link_to_the_same_person_changes_nothing() -> None:
    assert decide_link("p5", "p5") == ("p5", None, None)


@given(hs.lists(hs.tuples(hs.integers(0, 5), hs.integers(0, 5)), min_size=1, max_size=12))
def test_applying_links_in_any_order_ends_with_each_component_on_its_smallest_id(
    links: list[tuple[int, int]],
) -> None:
    """Simulates the routing for many orders of the same links: the identity stage's
    decisions (`decide_link`, unaware of merges done downstream) and the state stage's
    merges, which follow aliases of absorbed people. Every identity ends up resolving to
    the smallest id of its connected component."""
    ids = [f"p{n}" for n in range(6)]
    parent = {n: n for n in ids}  # reference: plain union-find by minimum

    def find(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for a, b in links:
        ra, rb = find(ids[a]), find(ids[b])
        parent[max(ra, rb)] = min(ra, rb)
    expected = {n: find(n) for n in ids}

    for order in itertools.islice(itertools.permutations(links), 24):
        table = {n: n for n in ids}  # identity stage: identity (seed) -> person
        alias: dict[str, str] = {}  # state stage: absorbed person -> where its state went

        def chase(p: str, alias: dict[str, str] = alias) -> str:
            while p in alias:
                p = alias[p]
            return p

        def merge(absorbed: str, target: str, alias: dict[str, str] = alias) -> None:
            a, t = chase(absorbed, alias), chase(target, alias)
            if a != t:  # the state stage keeps the smaller id, as the identity stage does
                alias[max(a, t)] = survivor(a, t)

        queue = [(ids[a], ids[b]) for a, b in order] + [(ids[b], ids[a]) for a, b in order]
        while queue:
            identity, claimed = queue.pop(0)
            target, absorbed, relink = decide_link(table[identity], claimed)
            table[identity] = target
            if absorbed is not None:
                merge(absorbed, target)
            if relink is not None:
                queue.append((relink, target))
        assert {n: chase(table[n]) for n in ids} == expected
