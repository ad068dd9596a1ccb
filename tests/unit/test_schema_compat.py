"""Schema evolution: every version of every subject in schemas/registry.json can read the
data of the version before it (backward compatibility, what consumers rely on when a
producer still writes the old version). Generic: a new version in registry.json is
checked without touching this file."""

from __future__ import annotations

import io
import itertools
import json
from collections import defaultdict
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.utils import generate_many

from pipeline.codec import EVENTS_SUBJECT, SCHEMAS_DIR

INDEX = json.loads((SCHEMAS_DIR / "registry.json").read_text())["schemas"]
SAMPLES = 200


def _raw(entry: dict[str, Any]) -> Any:
    return json.loads((SCHEMAS_DIR / entry["file"]).read_text())


def _consecutive_versions() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in INDEX:
        by_subject[entry["subject"]].append(entry)
    pairs = []
    for subject, entries in sorted(by_subject.items()):
        entries.sort(key=lambda e: int(e["version"]))
        pairs += [(subject, old, new) for old, new in itertools.pairwise(entries)]
    return pairs


PAIRS = _consecutive_versions()
PAIR_IDS = [f"{s}:v{old['version']}->v{new['version']}" for s, old, new in PAIRS]


def records_by_name(schema: Any, namespace: str = "") -> dict[str, dict[str, Any]]:
    """Every record type declared in a raw schema, by full name -> {field name: field}."""
    found: dict[str, dict[str, Any]] = {}
    if isinstance(schema, list):
        for branch in schema:
            found |= records_by_name(branch, namespace)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            ns = schema.get("namespace", namespace)
            name = schema["name"] if "." in schema["name"] else f"{ns}.{schema['name']}"
            found[name] = {f["name"]: f for f in schema["fields"]}
            for f in schema["fields"]:
                found |= records_by_name(f["type"], ns)
        elif schema.get("type") in ("array", "map"):
            found |= records_by_name(schema.get("items", schema.get("values")), namespace)
    return found


def added_fields_without_default(old: Any, new: Any) -> list[str]:
    """Fields a new version adds to an existing record without a default: old data lacks
    them, so a reader on the new schema could not fill them."""
    before = records_by_name(old)
    return [
        f"{record}.{name}"
        for record, fields in records_by_name(new).items()
        if record in before
        for name, field in fields.items()
        if name not in before[record] and "default" not in field
    ]


def read_old_with_new(old: Any, new: Any, samples: int = SAMPLES) -> None:
    """Write generated records with the old schema, read them with the new one as reader."""
    writer, reader = fastavro.parse_schema(old), fastavro.parse_schema(new)
    for record in generate_many(writer, samples):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, record)
        buf.seek(0)
        fastavro.schemaless_reader(buf, writer, reader)
        assert buf.tell() == len(buf.getvalue())


@pytest.mark.parametrize(("subject", "old", "new"), PAIRS, ids=PAIR_IDS)
def test_new_version_adds_fields_only_with_defaults(subject: str, old: Any, new: Any) -> None:
    assert added_fields_without_default(_raw(old), _raw(new)) == []


@pytest.mark.parametrize(("subject", "old", "new"), PAIRS, ids=PAIR_IDS)
def test_new_version_reads_data_of_the_previous_one(subject: str, old: Any, new: Any) -> None:
    read_old_with_new(_raw(old), _raw(new))


# -- the checks above do catch breaking changes ------------------------------------------

V1 = {
    "type": "record", "name": "R", "namespace": "t",
    "fields": [{"name": "a", "type": "string"}, {"name": "n", "type": "long"}],
}  # fmt: skip


def test_the_checks_catch_a_field_added_without_default() -> None:
    v2 = {**V1, "fields": [*V1["fields"], {"name": "b", "type": "string"}]}
    assert added_fields_without_default(V1, v2) == ["t.R.b"]
    with pytest.raises(fastavro.read.SchemaResolutionError):
        read_old_with_new(V1, v2, samples=1)


def test_the_checks_catch_an_incompatible_type_change() -> None:
    v2 = {**V1, "fields": [{"name": "a", "type": "string"}, {"name": "n", "type": "string"}]}
    with pytest.raises(fastavro.read.SchemaResolutionError):
        read_old_with_new(V1, v2, samples=1)


def test_the_checks_accept_a_field_added_with_default() -> None:
    v2 = {**V1, "fields": [*V1["fields"], {"name": "b", "type": "int", "default": 0}]}
    assert added_fields_without_default(V1, v2) == []
    read_old_with_new(V1, v2)


# -- the registry index itself -----------------------------------------------------------


def test_registry_ids_are_unique_and_every_file_exists_and_parses() -> None:
    ids = [int(e["id"]) for e in INDEX]
    assert len(ids) == len(set(ids)), f"schema ids used twice: {sorted(ids)}"
    for entry in INDEX:
        assert (SCHEMAS_DIR / entry["file"]).is_file(), entry
        fastavro.parse_schema(_raw(entry))
    pairs = [(e["subject"], int(e["version"])) for e in INDEX]
    assert len(pairs) == len(set(pairs)), "a subject lists one version twice"


def test_every_subject_numbers_its_versions_from_one_without_gaps() -> None:
    versions: dict[str, list[int]] = defaultdict(list)
    for entry in INDEX:
        versions[entry["subject"]].append(int(entry["version"]))
    for subject, vs in versions.items():
        assert sorted(vs) == list(range(1, len(vs) + 1)), subject


# -- the events schema: documented, and docs do not change what it is --------------------


def test_every_event_field_is_documented() -> None:
    (entry,) = [e for e in INDEX if e["subject"] == EVENTS_SUBJECT and e["version"] == 1]
    undocumented = [
        f"{record}.{name}"
        for record, fields in records_by_name(_raw(entry)).items()
        for name, field in fields.items()
        if not field.get("doc")
    ]
    assert undocumented == []


def test_events_v1_is_still_the_schema_it_was_registered_as() -> None:
    """Docs may change freely; the parsing canonical form (what the id stands for) may not."""
    (entry,) = [e for e in INDEX if e["subject"] == EVENTS_SUBJECT and e["version"] == 1]
    canonical = to_parsing_canonical_form(_raw(entry))
    assert fingerprint(canonical, "CRC-64-AVRO") == "0f2b286dd1e4303e"
