"""The HTTP schema registry client against a small real HTTP server on loopback.

No Confluent Schema Registry can run on these machines (no JVM, no Docker; see
/work/shared/notes/dev-stack.md), so `_Registry` serves the three endpoints the client uses
with Confluent's request and response shapes (ids global, versions per subject, errors as
{"error_code", "message"}).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest

from pipeline.codec import SCHEMAS_DIR, Codecs, FileSchemaRegistry
from pipeline.errors import Reason, Rejected
from pipeline.schema_registry import HttpSchemaRegistry, SchemaRegistryError, registry_for
from tests.unit.test_codec import EVENTS


class _Registry(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.schemas: list[str] = []  # id - 1 -> schema text
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[str] = []
        self.fail_with: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Registry

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[int, dict[str, Any]]:
        reg, parts = self.server, [unquote(p) for p in self.path.strip("/").split("/")]
        reg.requests.append(f"{self.command} {self.path}")
        if reg.fail_with:
            return reg.fail_with, {"error_code": 50001, "message": "Error in the backend store"}
        if self.command == "GET" and parts[:2] == ["schemas", "ids"]:
            sid = int(parts[2])
            if 0 < sid <= len(reg.schemas):
                return 200, {"schema": reg.schemas[sid - 1]}
            return 404, {"error_code": 40403, "message": "Schema not found"}
        if parts[0] != "subjects" or len(parts) < 3 or parts[2] != "versions":
            return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}
        subject = parts[1]
        if self.command == "POST":
            text = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["schema"]
            if text not in reg.schemas:
                reg.schemas.append(text)
            sid = reg.schemas.index(text) + 1
            versions = reg.subjects.setdefault(subject, [])
            if sid not in versions:
                versions.append(sid)
            return 200, {"id": sid}
        if subject not in reg.subjects:
            return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
        sid = reg.subjects[subject][-1]
        version = len(reg.subjects[subject])
        return 200, {
            "subject": subject,
            "version": version,
            "id": sid,
            "schema": reg.schemas[sid - 1],
        }

    def do_GET(self) -> None:
        self._answer(*self._route())

    do_POST = do_GET


@pytest.fixture
def server() -> Iterator[_Registry]:
    reg = _Registry()
    thread = threading.Thread(target=reg.serve_forever, daemon=True)
    thread.start()
    yield reg
    reg.shutdown()
    reg.server_close()


def _register_files(registry: HttpSchemaRegistry) -> dict[int, int]:
    """Registers every embedded schema, oldest version first; file id -> registry id."""
    index = json.loads((SCHEMAS_DIR / "registry.json").read_text())["schemas"]
    return {
        e["id"]: registry.register(e["subject"], json.loads((SCHEMAS_DIR / e["file"]).read_text()))
        for e in sorted(index, key=lambda e: (e["subject"], e["version"]))
    }


def test_codecs_work_on_the_http_registry_and_cache_schemas(server: _Registry) -> None:
    registry = HttpSchemaRegistry(server.url + "/")
    ids = _register_files(registry)
    assert sorted(ids.values()) == list(range(1, len(ids) + 1))
    codecs = Codecs(registry)
    reader = Codecs(HttpSchemaRegistry(server.url))
    for event in EVENTS:
        data = codecs.encode_event(event)
        assert int.from_bytes(data[1:5], "big") == codecs.events.schema_id
        assert reader.decode_event(data) == event
    by_id = [r for r in server.requests if r.startswith("GET /schemas/ids/")]
    assert by_id == [], "latest() already brought the schema: no lookup by id needed"
    fresh = HttpSchemaRegistry(server.url)
    assert fresh.schema(1) is fresh.schema(1)
    assert server.requests.count("GET /schemas/ids/1") == 1


def test_unknown_ids_and_subjects_are_key_errors(server: _Registry) -> None:
    registry = HttpSchemaRegistry(server.url)
    with pytest.raises(KeyError, match="Subject 'nope' not found"):
        registry.latest("nope")
    _register_files(registry)
    with pytest.raises(KeyError, match="Schema not found"):
        registry.schema(999)
    # ... which the codec turns into the unknown_schema rejection, like the file registry.
    data = Codecs(registry).encode_event(EVENTS[0])
    with pytest.raises(Rejected) as caught:
        Codecs(registry).decode_event(data[:1] + (999).to_bytes(4, "big") + data[5:])
    assert caught.value.reason is Reason.UNKNOWN_SCHEMA


def test_server_errors_say_what_the_server_said(server: _Registry) -> None:
    server.fail_with = 500
    with pytest.raises(SchemaRegistryError, match=r"HTTP 500 \(error 50001\): Error in the"):
        HttpSchemaRegistry(server.url).latest("touchflow.events-value")


def test_an_unreachable_registry_names_its_url() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        url = f"http://127.0.0.1:{closed.server_address[1]}"
    with pytest.raises(SchemaRegistryError, match=f"{url} unreachable"):
        HttpSchemaRegistry(url, timeout=2).schema(1)


def test_an_empty_url_means_the_embedded_file_registry() -> None:
    assert isinstance(registry_for(""), FileSchemaRegistry)
    assert isinstance(registry_for("http://registry:8081"), HttpSchemaRegistry)
