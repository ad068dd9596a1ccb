"""The automation library's pure parts: filters, back-off, the handled-seq store."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.automation import Backoff, Filter, FilterError, HandledStore, idempotency_key
from pipeline.state import Scores, SegmentChange

ZERO = Scores(0, 0, 0)


def change(
    dimension: str = "lifecycle",
    from_value: str | None = "active",
    to_value: str | None = "at_risk",
    brand: str = "lumi",
    person: str = "p-1",
    seq: int = 1,
) -> SegmentChange:
    return SegmentChange(
        brand, person, dimension, from_value, to_value, "rule", "time", 0, seq, ZERO, ZERO, "v1"
    )


def test_empty_filter_matches_everything() -> None:
    assert Filter().matches(change())
    assert Filter().matches(change("tag", None, "vip"))


def test_each_criterion_narrows() -> None:
    at_risk = Filter(dimensions=frozenset({"lifecycle"}), to_values=frozenset({"at_risk"}))
    assert at_risk.matches(change())
    assert not at_risk.matches(change(to_value="dormant"))
    assert not at_risk.matches(change("aipl_stage", "P", "at_risk"))  # same value, other dim
    lumi = Filter(brands=frozenset({"lumi", "mosu"}))
    assert lumi.matches(change(brand="mosu"))
    assert not lumi.matches(change(brand="aster"))
    from_active = Filter(from_values=frozenset({"active"}))
    assert from_active.matches(change())
    assert not from_active.matches(change(from_value=None))


def test_tag_filters_tell_added_from_removed() -> None:
    vip_added = Filter(tags=frozenset({"vip"}), tag_change="added")
    assert vip_added.matches(change("tag", None, "vip"))
    assert not vip_added.matches(change("tag", "vip", None))  # removed
    assert not vip_added.matches(change("tag", None, "koc"))
    assert not vip_added.matches(change("lifecycle", None, "vip"))  # not a tag change
    any_vip = Filter(tags=frozenset({"vip"}))
    assert any_vip.matches(change("tag", "vip", None))
    removed = Filter(tag_change="removed")
    assert removed.matches(change("tag", "koc", None))
    assert not removed.matches(change("tag", None, "koc"))


def test_filter_from_yaml_spec() -> None:
    f = Filter.from_spec(
        {"brands": ["lumi"], "dimensions": ["tag"], "tags": ["vip"], "tag_change": "added"}
    )
    assert f == Filter(
        brands=frozenset({"lumi"}),
        dimensions=frozenset({"tag"}),
        tags=frozenset({"vip"}),
        tag_change="added",
    )
    assert Filter.from_spec({"dimensions": ["layer:value"], "to": ["high"]}).matches(
        change("layer:value", "mid", "high")
    )
    assert Filter.from_spec(None) == Filter()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"brand": ["lumi"]}, "f: unknown keys ['brand']; expected ['brands', 'dimensions',"),
        ({"brands": "lumi"}, "f.brands: expected a non-empty list of strings, got 'lumi'"),
        ({"to": []}, "f.to: expected a non-empty list of strings, got []"),
        ({"to": ["a", 3]}, "f.to: expected non-empty strings, got 3"),
        ({"dimensions": ["lifecycles"]}, "f.dimensions: unknown dimension 'lifecycles'; use"),
        ({"dimensions": ["layer:"]}, "f.dimensions: unknown dimension 'layer:'"),
        ({"tag_change": "add"}, "f.tag_change: expected added or removed, got 'add'"),
        ({"dimensions": ["lifecycle"], "tags": ["vip"]}, "f: tags / tag_change only match"),
        (["lumi"], "f: expected a mapping of ['brands', "),
    ],
)
def test_filter_spec_errors_name_the_place(spec: object, message: str) -> None:
    with pytest.raises(FilterError) as info:
        Filter.from_spec(spec, "f")
    assert str(info.value).startswith(message)


def test_backoff_doubles_up_to_the_cap() -> None:
    b = Backoff(initial_seconds=0.5, multiplier=2, max_seconds=3)
    assert [b.delay(n) for n in range(0, 6)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert Backoff(1, 1, 10).delay(4) == 1.0  # multiplier 1: constant
    with pytest.raises(ValueError):
        Backoff(multiplier=0.5)


def test_idempotency_key() -> None:
    assert idempotency_key(change(brand="lumi", person="p-9", seq=12)) == "lumi:p-9:12"


def test_handled_store_keeps_the_highest_seq_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "g.sqlite3"
    store = HandledStore(path)
    assert not store.seen(change(seq=1))
    store.mark(change(seq=2))
    assert store.seen(change(seq=1)) and store.seen(change(seq=2))
    assert not store.seen(change(seq=3))
    assert not store.seen(change(seq=1, brand="mosu"))  # per (brand, person)
    assert not store.seen(change(seq=1, person="p-2"))
    store.mark(change(seq=1))  # an older one never lowers the mark
    store.close()
    reopened = HandledStore(path)
    assert reopened.seen(change(seq=2)) and not reopened.seen(change(seq=3))
    reopened.close()
