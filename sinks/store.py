"""One way to reach ClickHouse: chDB in-process (chdb:///path) or a server over HTTP.

clickhouse-connect gives both behind the same Client API, so every query and insert in
touchflow runs unchanged on the embedded default and on a production server.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import clickhouse_connect
from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.client import Client

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def connect(dsn: str, database: str | None = None) -> Client:
    if database is not None and not _IDENT.match(database):
        raise ValueError(f"clickhouse database name {database!r} is not a plain identifier")
    return clickhouse_connect.get_client(dsn=dsn, database=database)


# Per-insert settings the sink wants, on whatever server it talks to:
# - insert_deduplicate: drop an insert whose token was seen (server default 1; be explicit);
# - async_insert = 0: an asynchronous insert is deduplicated only with
#   async_insert_deduplicate, and chDB turns async inserts on by default.
INSERT_SETTINGS: dict[str, Any] = {"insert_deduplicate": 1, "async_insert": 0}


def supported(wanted: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """The settings of `wanted` this server knows (`known`: names in system.settings); the
    others are left out, so a statement stays valid on chDB and on every server version."""
    return {k: v for k, v in wanted.items() if k in known}


def insert_settings(client: Client) -> dict[str, Any]:
    names = [str(k) for k in INSERT_SETTINGS]
    found = client.query(
        "SELECT name FROM system.settings WHERE has({names:Array(String)}, name)",
        parameters={"names": names},
    ).result_rows
    return supported(INSERT_SETTINGS, {str(r[0]) for r in found})


def column_types(client: Client, table: str, columns: Sequence[str]) -> list[ClickHouseType]:
    """The types of `table`'s `columns`, read from the server (one DESCRIBE TABLE). An insert
    given them skips the DESCRIBE clickhouse-connect otherwise runs before every insert."""
    return list(client.create_insert_context(table, column_names=list(columns)).column_types)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in sinks/migrations, in order."""
    found = []
    for f in resources.files("sinks").joinpath("migrations").iterdir():
        if f.name.endswith(".sql"):
            version = int(f.name.split("_", 1)[0])
            found.append((version, f.name, f.read_text()))
    return sorted(found)


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    # Statements end with ';' at the end of a line (a ';' inside a string stays put).
    return [s.strip() for s in re.split(r";[ \t]*$", "\n".join(lines), flags=re.M) if s.strip()]


def migrate(dsn: str, database: str) -> list[str]:
    """Create the database and apply migrations not applied yet; returns those applied.

    Idempotent: applied versions are recorded in `schema_migrations`, and every statement
    is itself `IF NOT EXISTS`, so a run interrupted half-way can simply run again.
    """
    admin = connect(dsn)
    admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client = connect(dsn, database)
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        for statement in _statements(sql):
            client.command(statement)
        client.insert("schema_migrations", [[version, name]], column_names=["version", "name"])
        applied.append(name)
    return applied
