"""Tags and layers from declarative per-brand rules (YAML or dicts). Pure.

A rule is a condition over a person's *facts* (see `FACT_NAMES`), written as data:

    tags:
      - name: vip
        when: {window_amount_minor: {gte: 300000}}
      - name: koc
        when: {all: [{shares: {gte: 3}}, {invitations: {gte: 1}}]}
    layers:
      - name: value                       # one value per person: the first level that matches
        levels:
          - {name: high, when: {m: {gte: 4}}}
          - {name: mid, when: {m: {gte: 2}}}
          - {name: low}                   # no `when`: always matches (the fallback)

A condition is a mapping with one key: `all` / `any` (a list of conditions), `not` (one
condition), or a fact name mapping operators (eq, ne, gt, gte, lt, lte, in) to values;
several operators on one fact must all hold. `compile_rules` checks everything at
start-up and names the exact place of any mistake.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.avro_prebuilt import compiled_function, prebuilt, source_key
from pipeline.rfm import day_of

Facts = Mapping[str, Any]
Predicate = Callable[[Facts], bool]
Outcome = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]  # (tags, ((layer, level), ...))
# A brand's rules as one generated function of what `state.derive` holds (FACT_SOURCES).
Evaluator = Callable[[Any, Any, str | None, str, str | None, int, Any], Outcome]
EvaluatorSource = tuple[str, tuple[Any, ...]]  # (code of `evaluate`, its constants c0, c1, ...)

# The facts a rule may use, and the Python types their values have (None = no value,
# e.g. days_since_last_purchase of someone who never purchased: every comparison fails).
FACT_TYPES: dict[str, type] = {
    "lifetime_orders": int,
    "lifetime_amount_minor": int,
    "window_orders": int,
    "window_amount_minor": int,
    "r": int,
    "f": int,
    "m": int,
    "engagements": int,
    "shares": int,
    "invitations": int,
    "converted_invitees": int,
    "days_since_last_purchase": int,
    "days_since_first_seen": int,
    "subscribed": bool,
    "rfm_segment": str,
    "aipl_stage": str,
    "lifecycle": str,
    "acquisition_channel": str,
    "acquisition_source": str,
}
FACT_NAMES = frozenset(FACT_TYPES)
# Each fact as an expression over what `state.derive` holds when the rules run: `a` (the
# person's Aggregates), `scores` (Scores), `segment`, `stage`, `life` (the values of the
# RFM segment, AIPL stage and lifecycle), `today` (day number) and `window` (the RFM
# window's rfm.Window, None when no purchase). The one definition of the facts: the
# generated evaluators read the facts they use this way, and `facts_of` builds them all.
FACT_SOURCES: dict[str, str] = {
    "lifetime_orders": "a.lifetime_orders",
    "lifetime_amount_minor": "a.lifetime_amount_minor",
    "window_orders": "(window.orders if window else 0)",
    "window_amount_minor": "(window.amount_minor if window else 0)",
    "r": "scores.r",
    "f": "scores.f",
    "m": "scores.m",
    "engagements": "a.engagements",
    "shares": "a.shares",
    "invitations": "a.invitations",
    "converted_invitees": "a.converted_invitees",
    "days_since_last_purchase": (
        "(today - a.last_purchase_day if a.last_purchase_day >= 0 else None)"
    ),
    "days_since_first_seen": "today - day_of(a.first_seen)",
    "subscribed": "a.subscribed",
    "rfm_segment": "segment",
    "aipl_stage": "stage",
    "lifecycle": "life",
    "acquisition_channel": "a.acquisition_channel",
    "acquisition_source": "a.acquisition_source",
}
assert FACT_SOURCES.keys() == FACT_TYPES.keys()
_EVALUATOR_PARAMS = "a, scores, segment, stage, life, today, window"


def _facts_function() -> Callable[..., dict[str, Any]]:
    entries = "".join(f"        {name!r}: {code},\n" for name, code in FACT_SOURCES.items())
    source = f"def facts_of({_EVALUATOR_PARAMS}):\n    return {{\n{entries}    }}\n"
    namespace: dict[str, Any] = {"day_of": day_of}
    exec(compile(source, "<rules.facts_of>", "exec"), namespace)
    facts: Callable[..., dict[str, Any]] = namespace["facts_of"]
    return facts


# facts_of(a, scores, segment, stage, life, today, window) -> {fact: value}: every fact by
# name, for `BrandRules.evaluate` (rules built without a generated evaluator) and the
# tests; the core's evaluators read only theirs.
facts_of = _facts_function()

# Facts that grow by one each day with no event: thresholds on them are due times.
DAY_COUNTERS = ("days_since_last_purchase", "days_since_first_seen")

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "in": lambda value, options: value in options,
}
_ORDERED = {"gt", "gte", "lt", "lte"}


class RuleError(ValueError):
    """A rule that cannot be compiled; the message names where it is and what is wrong."""


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    test: Predicate
    text: str  # the condition as written, for explanations


@dataclass(frozen=True, slots=True)
class Level:
    name: str
    test: Predicate
    text: str


@dataclass(frozen=True, slots=True)
class Layer:
    name: str
    levels: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class BrandRules:
    tags: tuple[Tag, ...] = ()
    layers: tuple[Layer, ...] = ()
    # Day thresholds used on DAY_COUNTERS, so time-driven rule changes can be scheduled.
    day_thresholds: Mapping[str, frozenset[int]] = field(default_factory=dict)
    # The facts the conditions read (None: not known, treat as all). Lets the core skip
    # the rules when only other facts changed (pipeline.state._recompute).
    facts_used: frozenset[str] | None = None
    # The same evaluation as one generated function (`compile_brand_rules`), when known.
    compiled: Evaluator | None = field(default=None, repr=False, compare=False)
    # Its source and constants: what the build compiles (`evaluators_module_source`).
    source: EvaluatorSource | None = field(default=None, repr=False, compare=False)
    # `tags` sorted by name once, so `evaluate` needs no sort per call
    _tags_by_name: tuple[Tag, ...] = field(init=False, repr=False, compare=False)
    # tag name -> its rule as a change names it (`explain_tag`), built once
    _tag_rules: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tags_by_name", tuple(sorted(self.tags, key=lambda t: t.name)))
        object.__setattr__(
            self, "_tag_rules", {t.name: f"tag:{t.name}/{t.text}" for t in self.tags}
        )

    def evaluate(self, facts: Facts) -> Outcome:
        """(sorted tag names that hold, ((layer, level), ...) in declaration order), of
        facts by name (`facts_of`). The core runs `compiled` on what it holds instead."""
        return self.evaluate_each(facts)

    def evaluate_each(self, facts: Facts) -> Outcome:
        """`evaluate` through each condition's predicate: the reference for `compiled`."""
        tags = tuple([t.name for t in self._tags_by_name if t.test(facts)])
        layers = []
        for layer in self.layers:
            for level in layer.levels:
                if level.test(facts):
                    layers.append((layer.name, level.name))
                    break
        return tags, tuple(layers)

    def explain_tag(self, name: str) -> str:
        """The rule of tag `name`, as a change that adds it names it."""
        rule = self._tag_rules.get(name)
        return f"tag:{name}/removed_from_rules" if rule is None else rule

    def explain_level(self, layer: str, level: str | None) -> str:
        for lay in self.layers:
            if lay.name == layer:
                for lev in lay.levels:
                    if lev.name == level:
                        return f"layer:{layer}={level}/{lev.text}"
        return f"layer:{layer}={level}/no_level_matched"


@dataclass(frozen=True, slots=True)
class RuleBook:
    """Rules per brand; brands without their own use `default`."""

    default: BrandRules = BrandRules()
    brands: dict[str, BrandRules] = field(default_factory=dict)
    version: str = "builtin"

    def for_brand(self, brand: str) -> BrandRules:
        return self.brands.get(brand, self.default)


# -- compiling ---------------------------------------------------------------------------


@dataclass
class _Reads:
    """What the conditions compiled so far read: facts, and thresholds on day counters."""

    facts: set[str] = field(default_factory=set)
    days: dict[str, set[int]] = field(default_factory=dict)


def _compile_comparison(fact: str, ops: Any, where: str, reads: _Reads) -> Predicate:
    if fact not in FACT_TYPES:
        raise RuleError(f"{where}: unknown fact {fact!r}; known facts: {sorted(FACT_NAMES)}")
    reads.facts.add(fact)
    if not isinstance(ops, Mapping) or not ops:
        raise RuleError(f"{where}.{fact}: expected operators like {{gte: 3}}, got {ops!r}")
    kind = FACT_TYPES[fact]
    checks: list[tuple[Callable[[Any, Any], bool], Any]] = []
    for op, value in ops.items():
        if op not in _OPERATORS:
            raise RuleError(f"{where}.{fact}: unknown operator {op!r}; use {sorted(_OPERATORS)}")
        values = value if op == "in" else [value]
        if op == "in" and not isinstance(value, list):
            raise RuleError(f"{where}.{fact}.in: expected a list, got {value!r}")
        for v in values:
            # bool is an int in Python; keep the two apart so `subscribed: {eq: 1}` is caught
            if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
                raise RuleError(f"{where}.{fact}.{op}: {fact} is {kind.__name__}, got {v!r}")
        if op in _ORDERED and kind is not int:
            raise RuleError(f"{where}.{fact}.{op}: {fact} is {kind.__name__}, not a number")
        if fact in DAY_COUNTERS:
            reads.days.setdefault(fact, set()).update(values)
        checks.append((_OPERATORS[op], tuple(value) if op == "in" else value))

    if len(checks) == 1:  # the common case, without the loop (rules run on every event)
        ((check, v),) = checks

        def test_one(facts: Facts) -> bool:
            actual = facts.get(fact)
            return actual is not None and check(actual, v)

        return test_one

    def test(facts: Facts) -> bool:
        actual = facts.get(fact)
        return actual is not None and all(check(actual, v) for check, v in checks)

    return test


def _compile(cond: Any, where: str, reads: _Reads) -> Predicate:
    if not isinstance(cond, Mapping) or len(cond) != 1:
        raise RuleError(f"{where}: a condition is a mapping with exactly one key, got {cond!r}")
    ((key, arg),) = cond.items()
    if key in ("all", "any"):
        if not isinstance(arg, list) or not arg:
            raise RuleError(f"{where}.{key}: expected a non-empty list of conditions")
        parts = [_compile(c, f"{where}.{key}[{i}]", reads) for i, c in enumerate(arg)]
        # Loops that stop at the first part that decides (conditions are pure): cheaper
        # than all()/any() over a list that tests every part, or over a generator.
        if key == "all":

            def test_all(facts: Facts) -> bool:
                for p in parts:  # noqa: SIM110
                    if not p(facts):
                        return False
                return True

            return test_all

        def test_any(facts: Facts) -> bool:
            for p in parts:  # noqa: SIM110
                if p(facts):
                    return True
            return False

        return test_any
    if key == "not":
        inner = _compile(arg, f"{where}.not", reads)
        return lambda facts: not inner(facts)
    return _compile_comparison(str(key), arg, where, reads)


# -- one generated function per brand's rules ----------------------------------------------
#
# Why: the rules run on ~60 % of the core's recomputes, and calling a closure per
# condition (and per `all`/`any`) was ~10 % of the core benchmark. The generated
# function reads each fact once and tests the conditions inline. Only fact names (checked
# against FACT_TYPES) and operators appear in its source; every value and name a rule
# gives is a constant passed in, never spelled into the code.

_SYMBOLS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "in"}


def _source(cond: Any, consts: list[Any], reads: dict[str, str]) -> str:
    """A Python expression for a condition `_compile` has accepted."""
    ((key, arg),) = cond.items()
    if key in ("all", "any"):
        joint = " and " if key == "all" else " or "
        return "(" + joint.join(_source(c, consts, reads) for c in arg) + ")"
    if key == "not":
        return f"(not {_source(arg, consts, reads)})"
    var = reads.setdefault(key, f"f{len(reads)}")
    parts = [f"{var} is not None"]  # a missing value fails every comparison
    for op, value in arg.items():
        consts.append(tuple(value) if op == "in" else value)
        parts.append(f"{var} {_SYMBOLS[op]} c{len(consts) - 1}")
    return "(" + " and ".join(parts) + ")"


def _generate(
    tags: list[tuple[str, Any]], layers: list[tuple[str, list[tuple[str, Any]]]]
) -> tuple[Evaluator, EvaluatorSource]:
    """One function evaluating (tag name, condition) and (layer, [(level, condition or
    None: always)]) as `BrandRules.evaluate_each` does, and its source: compiled ahead of
    time when the build has it (`evaluators_module_source`), else run with `exec`."""
    source = evaluator_source(tags, layers)
    code, consts = source
    built = prebuilt(RULES_MODULE, reads_core_types=True).get(evaluator_key(source))
    if built is not None:
        return built, source
    namespace: dict[str, Any] = {f"c{i}": v for i, v in enumerate(consts)}
    namespace["day_of"] = day_of
    exec(code, namespace)
    evaluate: Evaluator = namespace["evaluate"]
    return evaluate, source


def evaluator_source(
    tags: list[tuple[str, Any]], layers: list[tuple[str, list[tuple[str, Any]]]]
) -> EvaluatorSource:
    """(the source of `def evaluate(a, scores, ...)`, the constants c0, c1, ... it reads):
    it reads each fact its conditions use once (FACT_SOURCES), then tests them inline."""
    consts: list[Any] = []
    reads: dict[str, str] = {}

    def const(value: Any) -> str:
        consts.append(value)
        return f"c{len(consts) - 1}"

    # The outcome built as tuples, each tag or level joined as a 1-tuple constant: most
    # people hold none or one of each, so no list is built and converted per call.
    body = ["    tags = ()"]
    for name, cond in sorted(tags, key=lambda t: t[0]):
        body.append(f"    if {_source(cond, consts, reads)}: tags += {const((name,))}")
    body.append("    layers = ()")
    for layer, levels in layers:
        for i, (level, cond) in enumerate(levels):
            test = "True" if cond is None else _source(cond, consts, reads)
            body.append(f"    {'if' if i == 0 else 'elif'} {test}:")
            body.append(f"        layers += {const(((layer, level),))}")
    body.append("    return tags, layers")
    head = [f"def evaluate({_EVALUATOR_PARAMS}):"]
    head += [f"    {var} = {FACT_SOURCES[fact]}" for fact, var in reads.items()]
    return "\n".join([*head, *body]) + "\n", tuple(consts)


# -- evaluators compiled ahead of time (pipeline.avro_prebuilt) ------------------------------

RULES_MODULE = "_rule_evaluators"


def evaluator_key(source: EvaluatorSource) -> str:
    """The digest an evaluator is found by: its code and its constants (rules that differ
    only in a threshold share the code)."""
    code, consts = source
    return source_key(f"{code}# {consts!r}\n")


# The typed build of an evaluator (`evaluators_module_source`): its arguments are the
# core's own types, so a fact is a C field read, and the integer facts that are never
# None are C integers compared with their constants written in as literals, so a
# condition is a C comparison (each fact was an attribute lookup through Python and each
# test a compare of objects: ~4 % of the core's work). Found only beside the compiled
# core it was built with (`prebuilt(..., reads_core_types=True)`).
_CORE_TYPES = [
    "from cython.cimports.pipeline.rfm import Window, day_of",
    "from cython.cimports.pipeline.state import Aggregates, Scores",
]
_TYPED_ARGS = ["a=Aggregates", "scores=Scores", "window=Window", "today=cython.longlong"]
# int facts whose source never gives None (days_since_last_purchase does, with no purchase)
_C_INTEGER_FACTS = frozenset(f for f, k in FACT_TYPES.items() if k is int) - {
    "days_since_last_purchase"
}
_C_INTEGER_RANGE = range(-(2**62), 2**62)  # a literal well inside a C long long
_FACT_OF_SOURCE = {code: fact for fact, code in FACT_SOURCES.items()}
_READ = re.compile(r"^    (f\d+) = (.*)$", re.MULTILINE)
_CONST = re.compile(r"\bc(\d+)\b")


def typed_evaluator(code: str, consts: tuple[Any, ...]) -> tuple[str, list[str]] | None:
    """`code` (an evaluator's source) as the typed build compiles it, and the C types to
    declare: constants written in as literals, no `is not None` test of a C integer fact;
    None when a constant is an integer too large for C (then it is built untyped)."""
    if any(type(c) is int and c not in _C_INTEGER_RANGE for c in consts):
        return None
    types = list(_TYPED_ARGS)
    for var, fact_source in _READ.findall(code):
        if _FACT_OF_SOURCE[fact_source] in _C_INTEGER_FACTS:
            types.append(f"{var}=cython.longlong")
            code = code.replace(f"{var} is not None and ", "")
    return _CONST.sub(lambda m: repr(consts[int(m[1])]), code), types


def evaluators_module_source(sources: Iterable[EvaluatorSource], typed: bool = True) -> str:
    """The module `pipeline._rule_evaluators` is compiled from: each evaluator of
    `sources` whose constants are literals, in FUNCTIONS by `evaluator_key`. `typed`:
    each as `typed_evaluator` gives it, where it can; else (and without `typed`, which
    also runs as plain Python: tests) with its constants as its arguments' defaults."""
    lines = ["import cython", "", *(_CORE_TYPES if typed else ["from pipeline.rfm import day_of"])]
    lines += ["", "FUNCTIONS = {}", ""]
    seen: set[str] = set()
    for source in sources:
        code, consts = source
        key = evaluator_key(source)
        if key in seen or not all(_is_literal(c) for c in consts):
            continue
        seen.add(key)
        built = typed_evaluator(code, consts) if typed else None
        if built is not None:
            code, types = built
        else:
            types = []
            defaults = "".join(f", c{i}={c!r}" for i, c in enumerate(consts))
            head = f"def evaluate({_EVALUATOR_PARAMS}"
            code = code.replace(f"{head}):", f"{head}{defaults}):", 1)
        lines += ["", compiled_function(code, "evaluate", key, types)]
        lines += [f"FUNCTIONS[{key!r}] = evaluate_{key}", ""]
    return "\n".join(lines)


def _is_literal(value: Any) -> bool:
    """A value its repr gives back exactly (numbers, strings, booleans, tuples of them)."""
    try:
        back = ast.literal_eval(repr(value))
    except (ValueError, SyntaxError):
        return False
    return type(back) is type(value) and back == value


def _name(item: Any, where: str) -> str:
    name = item.get("name") if isinstance(item, Mapping) else None
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise RuleError(f"{where}.name: expected a name of letters, digits and _, got {name!r}")
    return name


def _text(cond: Any) -> str:
    return "always" if cond is None else str(cond).replace(" ", "").replace("'", "")


def _always(facts: Facts) -> bool:
    return True


def compile_brand_rules(spec: Mapping[str, Any], where: str) -> BrandRules:
    unknown = set(spec) - {"tags", "layers"}
    if unknown:
        raise RuleError(f"{where}: unknown keys {sorted(unknown)}; expected tags, layers")
    reads = _Reads()
    tags: list[Tag] = []
    tag_conds: list[tuple[str, Any]] = []
    layer_conds: list[tuple[str, list[tuple[str, Any]]]] = []
    for i, item in enumerate(spec.get("tags") or []):
        at = f"{where}.tags[{i}]"
        name = _name(item, at)
        if "when" not in item:
            raise RuleError(f"{at}: a tag needs a `when` condition")
        if any(t.name == name for t in tags):
            raise RuleError(f"{at}: tag {name!r} is defined twice")
        tags.append(Tag(name, _compile(item["when"], f"{at}.when", reads), _text(item["when"])))
        tag_conds.append((name, item["when"]))
    layers: list[Layer] = []
    for i, item in enumerate(spec.get("layers") or []):
        at = f"{where}.layers[{i}]"
        name = _name(item, at)
        levels_spec = item.get("levels")
        if not isinstance(levels_spec, list) or not levels_spec:
            raise RuleError(f"{at}.levels: expected a non-empty list of levels")
        levels = []
        level_conds: list[tuple[str, Any]] = []
        for j, lev in enumerate(levels_spec):
            lat = f"{at}.levels[{j}]"
            cond = lev.get("when") if isinstance(lev, Mapping) else None
            test = _always if cond is None else _compile(cond, f"{lat}.when", reads)
            level = _name(lev, lat)
            levels.append(Level(level, test, _text(cond)))
            level_conds.append((level, cond))
        layers.append(Layer(name, tuple(levels)))
        layer_conds.append((name, level_conds))
    compiled, source = _generate(tag_conds, layer_conds)
    return BrandRules(
        tags=tuple(tags),
        layers=tuple(layers),
        day_thresholds={k: frozenset(v) for k, v in reads.days.items()},
        facts_used=frozenset(reads.facts),
        compiled=compiled,
        source=source,
    )


def compile_rules(spec: Mapping[str, Any] | None, version: str = "builtin") -> RuleBook:
    """Compile `{default: {...}, brands: {slug: {...}}}`; raise RuleError on any mistake."""
    spec = DEFAULT_RULES if spec is None else spec
    unknown = set(spec) - {"default", "brands"}
    if unknown:
        raise RuleError(f"rules: unknown keys {sorted(unknown)}; expected default, brands")
    default = compile_brand_rules(spec.get("default") or {}, "rules.default")
    brands = {
        str(slug): compile_brand_rules(brand_spec or {}, f"rules.brands.{slug}")
        for slug, brand_spec in (spec.get("brands") or {}).items()
    }
    return RuleBook(default=default, brands=brands, version=version)


# Built-in rules: what an operator expects on day one; a brand's YAML replaces them.
DEFAULT_RULES: dict[str, Any] = {
    "default": {
        "tags": [
            {"name": "new_customer", "when": {"lifetime_orders": {"eq": 0}}},
            {"name": "repeat_buyer", "when": {"lifetime_orders": {"gte": 2}}},
            {"name": "vip", "when": {"window_amount_minor": {"gte": 300_000}}},
            # Key opinion consumer: shares a lot, and someone they referred bought.
            {
                "name": "koc",
                "when": {"all": [{"shares": {"gte": 3}}, {"converted_invitees": {"gte": 1}}]},
            },
            {"name": "unsubscribed", "when": {"subscribed": {"eq": False}}},
        ],
        "layers": [
            {
                "name": "value",
                "levels": [
                    {"name": "high", "when": {"m": {"gte": 4}}},
                    {"name": "mid", "when": {"m": {"gte": 2}}},
                    {"name": "low", "when": {"m": {"gte": 1}}},
                ],
            }
        ],
    }
}
