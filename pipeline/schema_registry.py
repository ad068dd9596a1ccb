"""A Confluent-compatible schema registry client behind `pipeline.codec.SchemaRegistry`.

The embedded `FileSchemaRegistry` stays the default (`schema_registry_url` empty); a URL
switches every codec to the HTTP registry: the schema id in each message is then the
registry's. Only the three calls touchflow needs, over stdlib urllib (no extra dependency):
GET /schemas/ids/{id}, GET /subjects/{subject}/versions/latest, POST
/subjects/{subject}/versions. Schemas are immutable per id, so they are cached forever.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import fastavro

from pipeline.codec import FileSchemaRegistry, SchemaRegistry

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# Confluent's error codes for "subject not found", "version not found", "schema not found".
NOT_FOUND_CODES = frozenset({40401, 40402, 40403})


class SchemaRegistryError(RuntimeError):
    """The registry could not be reached or answered with an error (not a plain "unknown")."""


class HttpSchemaRegistry:
    """Reads (and registers) schemas in a Confluent-compatible registry over HTTP."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._by_id: dict[int, Any] = {}
        self._lock = threading.Lock()  # SyncPublisher and the agent may share one instance

    def schema(self, schema_id: int) -> Any:
        with self._lock:
            cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        body = self._call("GET", f"/schemas/ids/{schema_id}")
        return self._remember(schema_id, body["schema"])

    def latest(self, subject: str) -> tuple[int, Any]:
        body = self._call("GET", f"/subjects/{_quote(subject)}/versions/latest")
        sid = int(body["id"])
        return sid, self._remember(sid, body["schema"])

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register `schema` (raw .avsc JSON) under `subject`; its id (existing or new)."""
        text = json.dumps(schema)
        body = self._call("POST", f"/subjects/{_quote(subject)}/versions", {"schema": text})
        sid = int(body["id"])
        self._remember(sid, text)
        return sid

    def _remember(self, schema_id: int, text: str) -> Any:
        parsed = fastavro.parse_schema(json.loads(text))
        with self._lock:
            return self._by_id.setdefault(schema_id, parsed)

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            code, message = _error_of(exc)
            if exc.code == 404 and code in NOT_FOUND_CODES | {None}:
                raise KeyError(f"{method} {path}: {message}") from None
            raise SchemaRegistryError(
                f"schema registry {self.url}: {method} {path} -> HTTP {exc.code}"
                f"{f' (error {code})' if code else ''}: {message}"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SchemaRegistryError(
                f"schema registry {self.url} unreachable: {method} {path}: {reason}"
            ) from None
        except json.JSONDecodeError as exc:
            raise SchemaRegistryError(
                f"schema registry {self.url}: {method} {path} answered non-JSON: {exc}"
            ) from None


def _quote(subject: str) -> str:
    return urllib.parse.quote(subject, safe="")


def _error_of(exc: urllib.error.HTTPError) -> tuple[int | None, str]:
    """Confluent's error body is {"error_code": 40403, "message": "..."}; fall back to text."""
    text = exc.read().decode(errors="replace")
    try:
        body = json.loads(text)
        return body.get("error_code"), str(body.get("message", text))
    except (json.JSONDecodeError, AttributeError):
        return None, text.strip() or exc.reason


def registry_for(url: str) -> SchemaRegistry:
    """The registry a setting names: empty = the embedded files, else an HTTP registry."""
    return HttpSchemaRegistry(url) if url else FileSchemaRegistry()
