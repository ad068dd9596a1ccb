"""Tag and layer rules: compiling (with exact error places), evaluating, due days."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from pipeline import rfm
from pipeline import state as core
from pipeline.events import EventType, Purchase, Share, Touchpoint, UserRef
from pipeline.rules import DEFAULT_RULES, RuleError, compile_rules, facts_of

DAY = rfm.MS_PER_DAY
T0 = 19_675 * DAY
USER = UserRef("openid", "h1:" + "0" * 32)

KOC_RULES: dict[str, Any] = {
    "default": {
        "tags": [
            {"name": "koc", "when": {"all": [{"shares": {"gte": 3}}, {"invitations": {"gte": 1}}]}},
            {"name": "lapsed", "when": {"days_since_last_purchase": {"gte": 45}}},
            {"name": "fresh", "when": {"lifecycle": {"in": ["new", "won_back"]}}},
            {"name": "quiet", "when": {"not": {"engagements": {"gte": 1}}}},
        ],
        "layers": [
            {
                "name": "crowd",
                "levels": [
                    {"name": "buyer", "when": {"lifetime_orders": {"gte": 1}}},
                    {
                        "name": "fan",
                        "when": {"any": [{"shares": {"gte": 1}}, {"engagements": {"gte": 2}}]},
                    },
                    {"name": "visitor"},
                ],
            }
        ],
    },
    "brands": {
        "other": {"tags": [{"name": "big", "when": {"lifetime_amount_minor": {"gt": 100}}}]}
    },
}


def _facts(**overrides: Any) -> dict[str, Any]:
    base = {
        "shares": 0, "invitations": 0, "engagements": 0, "lifetime_orders": 0,
        "lifetime_amount_minor": 0, "days_since_last_purchase": None, "lifecycle": None,
    }  # fmt: skip
    return {**base, **overrides}


def test_tags_and_layers_evaluate_in_declaration_order() -> None:
    book = compile_rules(KOC_RULES)
    rules = book.for_brand("lumi")
    assert rules.evaluate(_facts()) == (("quiet",), (("crowd", "visitor"),))
    assert rules.evaluate(_facts(shares=3, invitations=1, engagements=3)) == (
        ("koc",),
        (("crowd", "fan"),),
    )
    assert rules.evaluate(_facts(engagements=1, lifetime_orders=1, lifecycle="won_back")) == (
        ("fresh",),
        (("crowd", "buyer"),),
    )
    assert rules.evaluate(_facts(engagements=1, days_since_last_purchase=44))[0] == ()
    assert rules.evaluate(_facts(engagements=1, days_since_last_purchase=45))[0] == ("lapsed",)
    assert book.for_brand("other").evaluate(_facts(lifetime_amount_minor=101))[0] == ("big",)


def test_a_missing_fact_value_fails_every_comparison() -> None:
    rules = compile_rules(KOC_RULES).for_brand("lumi")
    assert "lapsed" not in rules.evaluate(_facts(days_since_last_purchase=None))[0]


def test_day_thresholds_are_collected_for_the_due_time_index() -> None:
    rules = compile_rules(KOC_RULES).for_brand("lumi")
    assert rules.day_thresholds == {"days_since_last_purchase": frozenset({45})}


def test_a_day_threshold_tag_appears_on_time_alone() -> None:
    policy = core.Policy(rules=compile_rules(KOC_RULES))
    buy = Touchpoint("b", EventType.PURCHASE, "lumi", "wecom", USER, T0, Purchase("o", 100))
    s, _ = core.apply(None, buy, "p1", policy)
    s, changes = core.advance(s, "lumi", "p1", T0 + 50 * DAY, policy)
    lapsed = [c for c in changes if c.dimension == "tag" and c.to_value == "lapsed"]
    assert [(c.event_time, c.cause_event_id) for c in lapsed] == [(T0 + 45 * DAY, "time")]
    assert lapsed[0].rule == "tag:lapsed/{days_since_last_purchase:{gte:45}}"


def test_tag_removal_and_layer_moves_are_changes_with_their_rule() -> None:
    policy = core.Policy(rules=compile_rules(KOC_RULES))
    s = None
    changes: list[core.SegmentChange] = []
    for i in range(3):
        share = Touchpoint(
            f"s{i}", EventType.SHARE, "lumi", "wecom", USER, T0 + i, Share("c", USER)
        )
        s, cs = core.apply(s, share, "p1", policy)
        changes += cs
    moves = [(c.dimension, c.from_value, c.to_value) for c in changes]
    assert ("layer:crowd", None, "visitor") not in moves  # the first event already shares
    assert moves[:2] == [("aipl_stage", "A", "I"), ("layer:crowd", None, "fan")]
    assert ("tag", None, "quiet") not in moves  # the first event is already an engagement
    assert ("tag", None, "koc") in moves
    assert s is not None and s.tags == ("koc",)


def test_a_policy_gives_each_brand_its_rules_and_a_replaced_policy_its_own() -> None:
    """`Policy.rules_for` keeps what it found per brand; that never outlives the rules."""
    book = compile_rules(KOC_RULES)
    policy = core.Policy(rules=book)
    for _ in range(2):  # found, then kept
        assert policy.rules_for("lumi") is book.default
        assert policy.rules_for("other") is book.brands["other"]
    assert policy == core.Policy(rules=book)  # what it keeps is no part of the value
    other = compile_rules(DEFAULT_RULES)
    replaced = replace(policy, rules=other)
    assert replaced.rules_for("lumi") is other.default
    assert replaced.rules_for("other") is other.default  # no rules of its own there
    assert policy.rules_for("other") is book.brands["other"]


def test_tags_lost_and_gained_at_once_are_changes_in_name_order_with_their_rules() -> None:
    def spec(*names: str) -> dict[str, Any]:
        conds = {
            "a_low": {"shares": {"lte": 1}},
            "b_low": {"engagements": {"lte": 1}},
            "c_high": {"shares": {"gte": 2}},
            "d_high": {"engagements": {"gte": 2}},
        }
        return {"default": {"tags": [{"name": n, "when": conds[n]} for n in names]}}

    policy = core.Policy(rules=compile_rules(spec("d_high", "c_high", "b_low", "a_low")))
    s = None
    tag_moves = []
    for i in range(2):
        share = Touchpoint(f"s{i}", EventType.SHARE, "lumi", "wecom", USER, T0 + i, Share("c"))
        s, cs = core.apply(s, share, "p1", policy)
        tag_moves.append([(c.from_value, c.to_value, c.rule) for c in cs if c.dimension == "tag"])
    assert tag_moves == [
        [
            (None, "a_low", "tag:a_low/{shares:{lte:1}}"),
            (None, "b_low", "tag:b_low/{engagements:{lte:1}}"),
        ],
        [
            ("a_low", None, "untag:a_low/{shares:{lte:1}}"),
            ("b_low", None, "untag:b_low/{engagements:{lte:1}}"),
            (None, "c_high", "tag:c_high/{shares:{gte:2}}"),
            (None, "d_high", "tag:d_high/{engagements:{gte:2}}"),
        ],
    ]
    assert s is not None and s.tags == ("c_high", "d_high")
    fewer = core.Policy(rules=compile_rules(spec("c_high")), version="v2")
    _, changes = core.reassess(s, "lumi", "p1", fewer)
    assert [(c.dimension, c.from_value, c.to_value, c.rule) for c in changes] == [
        ("tag", "d_high", None, "untag:d_high/removed_from_rules")
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"default": {"tags": [{"name": "x", "when": {"orderz": {"gte": 1}}}]}},
         "rules.default.tags[0].when: unknown fact 'orderz'"),
        ({"default": {"tags": [{"name": "x", "when": {"shares": {"atleast": 1}}}]}},
         "rules.default.tags[0].when.shares: unknown operator 'atleast'"),
        ({"default": {"tags": [{"name": "x", "when": {"shares": {"gte": "3"}}}]}},
         "rules.default.tags[0].when.shares.gte: shares is int, got '3'"),
        ({"default": {"tags": [{"name": "x", "when": {"subscribed": {"eq": 1}}}]}},
         "rules.default.tags[0].when.subscribed.eq: subscribed is bool, got 1"),
        ({"default": {"tags": [{"name": "x", "when": {"lifecycle": {"gt": "a"}}}]}},
         "rules.default.tags[0].when.lifecycle.gt: lifecycle is str, not a number"),
        ({"default": {"tags": [{"name": "x"}]}}, "rules.default.tags[0]: a tag needs a `when`"),
        ({"default": {"tags": [{"name": "x y", "when": {"shares": {"gte": 1}}}]}},
         "rules.default.tags[0].name: expected a name"),
        ({"default": {"tags": [{"name": "x", "when": {"all": []}}]}},
         "rules.default.tags[0].when.all: expected a non-empty list"),
        ({"default": {"tags": [{"name": "x", "when": {"shares": {"gte": 1}, "m": {"gte": 1}}}]}},
         "exactly one key"),
        ({"default": {"tags": [{"name": "x", "when": {"m": {"gte": 1}}}] * 2}},
         "tag 'x' is defined twice"),
        ({"default": {"layers": [{"name": "l", "levels": []}]}},
         "rules.default.layers[0].levels: expected a non-empty list"),
        ({"brands": {"acme": {"tagz": []}}}, "rules.brands.acme: unknown keys ['tagz']"),
        ({"defaults": {}}, "rules: unknown keys ['defaults']"),
    ],
)  # fmt: skip
def test_mistakes_are_refused_with_their_exact_place(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError) as info:
        compile_rules(spec)
    assert message in str(info.value)


def test_the_built_in_rules_compile_and_an_empty_spec_means_no_rules() -> None:
    assert [t.name for t in compile_rules(DEFAULT_RULES).default.tags] == [
        "new_customer", "repeat_buyer", "vip", "koc", "unsubscribed",
    ]  # fmt: skip
    assert [t.text for t in compile_rules(None).default.tags] == [
        t.text for t in compile_rules(DEFAULT_RULES).default.tags
    ]
    empty = compile_rules({})
    assert empty.default.tags == () and empty.default.layers == ()


def test_settings_refuse_bad_rules_at_start_up(tmp_path: Any) -> None:
    from pydantic import ValidationError

    from pipeline.settings import Settings

    with pytest.raises(ValidationError, match="unknown fact 'orderz'"):
        Settings(rules={"default": {"tags": [{"name": "x", "when": {"orderz": {"gte": 1}}}]}})
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("default:\n  tags:\n    - {name: big, when: {m: {gte: 5}}}\n")
    policy = Settings(rules_file=rules_file, policy_version="2026-11").policy()
    assert [t.name for t in policy.rules.default.tags] == ["big"]
    assert policy.version == policy.rules.version == "2026-11"
    assert replace(policy, dedup_window=3).dedup_window == 3


# Every operator, nesting, a multi-operator comparison, `in` over strings, and a fallback.
EVERY_FORM_RULES: dict[str, Any] = {
    "default": {
        "tags": [
            {"name": "z_last", "when": {"lifetime_orders": {"gte": 1, "lt": 4}}},
            {"name": "a_first", "when": {"any": [{"r": {"eq": 5}}, {"f": {"ne": 1}}]}},
            {"name": "fresh", "when": {"lifecycle": {"in": ["new", "won_back"]}}},
            {"name": "off", "when": {"subscribed": {"eq": False}}},
            {"name": "calm", "when": {"not": {"all": [{"m": {"gt": 2}}, {"m": {"lte": 4}}]}}},
            {"name": "late", "when": {"days_since_last_purchase": {"gte": 30}}},
        ],
        "layers": [
            {
                "name": "value",
                "levels": [
                    {"name": "high", "when": {"m": {"gte": 4}}},
                    {"name": "mid", "when": {"any": [{"m": {"eq": 3}}, {"shares": {"gt": 2}}]}},
                    {"name": "rest"},
                ],
            },
            {"name": "lapse", "levels": [{"name": "yes", "when": {"r": {"lte": 1}}}]},
        ],
    }
}

_small = hs.integers(0, 6)
TODAY = 19_700


@hs.composite
def _held(draw: Any) -> tuple[Any, ...]:
    """What `state.derive` holds when the rules run (the generated evaluators' arguments):
    facts around the example rules' thresholds, each that may be missing sometimes so."""
    a = core.Aggregates(
        first_seen=(TODAY - draw(hs.integers(0, 60))) * DAY,
        engagements=draw(_small),
        shares=draw(_small),
        invitations=draw(_small),
        lifetime_orders=draw(_small),
        lifetime_amount_minor=draw(hs.sampled_from([0, 101, 300_000])),
        last_purchase_day=draw(hs.one_of(hs.just(-1), hs.integers(TODAY - 60, TODAY))),
        last_join=draw(hs.sampled_from([-1, 5])),
        last_leave=draw(hs.sampled_from([-1, 3, 7])),
        acquisition_channel=draw(hs.sampled_from([None, "wecom"])),
        converted_invitees=draw(_small),
    )
    scores = core.Scores(draw(_small), draw(_small), draw(_small))
    window = draw(
        hs.one_of(hs.none(), hs.builds(rfm.Window, _small, hs.sampled_from([0, 300_000])))
    )
    life = draw(hs.sampled_from([None, "new", "active", "won_back"]))
    segment = draw(hs.sampled_from([None, "重要价值客户"]))
    return a, scores, segment, "purchase", life, TODAY, window


@settings(max_examples=300, deadline=None)
@given(held=_held())
def test_the_generated_evaluation_agrees_with_each_condition_s_predicate(
    held: tuple[Any, ...],
) -> None:
    facts = facts_of(*held)
    for spec in (EVERY_FORM_RULES, KOC_RULES, DEFAULT_RULES):
        rules = compile_rules(spec).default
        assert rules.compiled is not None
        assert rules.compiled(*held) == rules.evaluate_each(facts)


def test_the_facts_are_what_their_names_say() -> None:
    """`facts_of`, the one definition of the facts (FACT_SOURCES), on a known person."""
    a = core.Aggregates(
        first_seen=(TODAY - 40) * DAY + 5, engagements=2, shares=3, invitations=1,
        lifetime_orders=4, lifetime_amount_minor=500, last_purchase_day=TODAY - 9,
        last_join=10, last_leave=20, acquisition_channel="wecom", acquisition_source="live",
        converted_invitees=1,
    )  # fmt: skip
    facts = facts_of(a, core.Scores(3, 2, 1), "seg", "loyalty", "active", TODAY, rfm.Window(2, 300))
    assert facts == {
        "lifetime_orders": 4, "lifetime_amount_minor": 500, "window_orders": 2,
        "window_amount_minor": 300, "r": 3, "f": 2, "m": 1, "engagements": 2, "shares": 3,
        "invitations": 1, "converted_invitees": 1, "days_since_last_purchase": 9,
        "days_since_first_seen": 40, "subscribed": False, "rfm_segment": "seg",
        "aipl_stage": "loyalty", "lifecycle": "active", "acquisition_channel": "wecom",
        "acquisition_source": "live",
    }  # fmt: skip
    never = facts_of(core.Aggregates(), core.NO_SCORES, None, "awareness", None, TODAY, None)
    assert never["days_since_last_purchase"] is None and never["subscribed"] is None
    assert never["window_orders"] == never["window_amount_minor"] == 0
    assert (
        facts_of(replace(a, last_leave=-1), *[core.NO_SCORES, None, "", None, 0, None])[
            "subscribed"
        ]
        is True
    )


# -- evaluators compiled ahead of time ------------------------------------------------------


def _built_module(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """The module the build compiles for `specs`, run as plain Python (Cython's decorators
    are no-ops there)."""
    pytest.importorskip("cython")  # the dev extra has it; the build needs it anyway
    from pipeline.rules import evaluators_module_source

    sources = [compile_rules(spec).default.source for spec in specs]
    module: dict[str, Any] = {}
    exec(compile(evaluators_module_source(sources, typed=False), "<rules>", "exec"), module)
    return module


@settings(max_examples=200, deadline=None)
@given(held=_held())
def test_the_module_the_build_compiles_evaluates_as_the_source_does(
    held: tuple[Any, ...],
) -> None:
    from pipeline.rules import evaluator_key

    specs = [EVERY_FORM_RULES, KOC_RULES, DEFAULT_RULES, DEFAULT_RULES]  # the same: built once
    module = _built_module(specs)
    assert len(module["FUNCTIONS"]) == 3
    for spec in specs:
        rules = compile_rules(spec).default
        assert rules.source is not None
        built = module["FUNCTIONS"][evaluator_key(rules.source)]
        assert built(*held) == rules.evaluate_each(facts_of(*held))


def test_rules_differing_only_in_a_threshold_are_different_evaluators() -> None:
    from pipeline.rules import evaluator_key

    lower = {"default": {"tags": [{"name": "big", "when": {"m": {"gte": 3}}}]}}
    higher = {"default": {"tags": [{"name": "big", "when": {"m": {"gte": 4}}}]}}
    a, b = compile_rules(lower).default, compile_rules(higher).default
    assert a.source is not None and b.source is not None
    assert a.source[0] == b.source[0] and evaluator_key(a.source) != evaluator_key(b.source)
    assert a.evaluate({"m": 3}) == (("big",), ()) and b.evaluate({"m": 3}) == ((), ())
    module = _built_module([lower])
    assert list(module["FUNCTIONS"]) == [evaluator_key(a.source)]


def test_an_evaluator_whose_constants_are_not_literals_is_left_to_its_source() -> None:
    pytest.importorskip("cython")
    from pipeline.rules import evaluators_module_source

    code = "def evaluate(a, scores, segment, stage, life, today, window):\n    return (c0,), ()\n"
    module: dict[str, Any] = {}
    exec(evaluators_module_source([(code, (object(),))], typed=False), module)
    assert module["FUNCTIONS"] == {}


def test_the_built_in_rules_run_compiled_ahead_of_time() -> None:
    from pipeline.avro_prebuilt import prebuilt
    from pipeline.rules import RULES_MODULE, evaluator_key

    built = prebuilt(RULES_MODULE)
    if not built:
        pytest.skip("no build of the evaluators here (make venv builds it), or interpreted")
    rules = compile_rules(None).default
    assert rules.source is not None and rules.compiled is built[evaluator_key(rules.source)]
    assert type(rules.compiled).__name__ != "function"  # not the exec'd source
    unseen = compile_rules({"default": {"tags": [{"name": "x", "when": {"m": {"gte": 5}}}]}})
    assert type(unseen.default.compiled).__name__ == "function"  # not in the build: its source


def test_without_a_build_the_evaluators_run_their_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.avro_prebuilt import prebuilt
    from pipeline.rules import RULES_MODULE

    monkeypatch.setenv("TOUCHFLOW_INTERPRETED", "1")
    assert prebuilt(RULES_MODULE) == {}
    assert type(compile_rules(None).default.compiled).__name__ == "function"


# Conditions on every integer fact that is never None (the typed build's C integers),
# with each operator, beside facts that may be None.
C_INTEGER_RULES: dict[str, Any] = {
    "default": {
        "tags": [
            {"name": "w", "when": {"window_amount_minor": {"gte": 300_000}}},
            {"name": "wo", "when": {"window_orders": {"in": [1, 2]}}},
            {"name": "seen", "when": {"days_since_first_seen": {"lt": 30, "ne": 7}}},
            {"name": "talk", "when": {"engagements": {"gt": 2}}},
            {
                "name": "inv",
                "when": {"all": [{"invitations": {"lte": 3}}, {"converted_invitees": {"eq": 0}}]},
            },
            {"name": "spent", "when": {"lifetime_amount_minor": {"gte": 101}}},
            {"name": "late", "when": {"days_since_last_purchase": {"gte": 30}}},
            {"name": "from", "when": {"acquisition_channel": {"eq": "wecom"}}},
        ],
    }
}


@settings(max_examples=200, deadline=None)
@given(held=_held())
def test_the_typed_build_of_an_evaluator_evaluates_as_its_source_does(
    held: tuple[Any, ...],
) -> None:
    """`typed_evaluator`'s code (constants written in, no None test of a C integer fact)
    run as plain Python: as the rules' predicates."""
    from pipeline.rfm import day_of
    from pipeline.rules import typed_evaluator

    for spec in (EVERY_FORM_RULES, KOC_RULES, DEFAULT_RULES, C_INTEGER_RULES):
        rules = compile_rules(spec).default
        assert rules.source is not None
        built = typed_evaluator(*rules.source)
        assert built is not None
        code, _ = built
        assert not re.search(r"\bc\d+\b", code)  # every constant written in
        scope: dict[str, Any] = {"day_of": day_of}
        exec(code, scope)
        assert scope["evaluate"](*held) == rules.evaluate_each(facts_of(*held))


def test_the_typed_build_declares_c_integers_only_for_facts_never_none() -> None:
    from pipeline.rules import FACT_SOURCES, typed_evaluator

    fact_of = {code: fact for fact, code in FACT_SOURCES.items()}
    rules = compile_rules(C_INTEGER_RULES).default
    assert rules.source is not None
    built = typed_evaluator(*rules.source)
    assert built is not None
    code, types = built
    reads = dict(re.findall(r"^    (f\d+) = (.*)$", code, re.MULTILINE))
    typed = {fact_of[reads[t.split("=")[0]]] for t in types if t.startswith("f")}
    assert typed == {
        "window_amount_minor", "window_orders", "days_since_first_seen", "engagements",
        "invitations", "converted_invitees", "lifetime_amount_minor",
    }  # fmt: skip
    for var, source in reads.items():  # the others keep their test for a missing value
        assert (f"{var} is not None and" in code) == (fact_of[source] not in typed)


def test_an_integer_constant_too_large_for_c_leaves_its_evaluator_untyped() -> None:
    from pipeline.rules import evaluators_module_source, typed_evaluator

    rich = {"name": "rich", "when": {"lifetime_amount_minor": {"gte": 2**70}}}
    huge = {"default": {"tags": [rich]}}
    rules = compile_rules(huge).default
    assert rules.source is not None
    assert typed_evaluator(*rules.source) is None
    module = evaluators_module_source([rules.source])
    assert f"c0={2**70!r}" in module  # its constant passed as an argument's default, as before


def test_an_evaluator_typed_by_the_core_is_not_used_beside_an_uncompiled_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stale build runs the core from its .py files, whose objects have no C layout:
    the typed evaluators must not be handed those."""
    import pipeline.avro_prebuilt as prebuilt_module
    from pipeline.rules import RULES_MODULE

    monkeypatch.setattr(prebuilt_module, "state_is_compiled", lambda: False)
    assert prebuilt_module.prebuilt(RULES_MODULE, reads_core_types=True) == {}


@pytest.mark.parametrize("error", [ImportError, AttributeError, TypeError, ValueError])
def test_a_build_that_does_not_load_beside_this_core_is_not_used(
    monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """A module cimporting the core's classes checks them as it loads (a class missing, not
    a type, or of another size: e.g. found through another checkout's path): the build
    is then not used, and the source runs."""
    import importlib

    import pipeline.avro_prebuilt as prebuilt_module
    from pipeline.rules import RULES_MODULE

    def fail(name: str) -> None:
        raise error(f"{name}: does not match")

    monkeypatch.setattr(importlib, "import_module", fail)
    assert prebuilt_module.prebuilt(RULES_MODULE) == {}
