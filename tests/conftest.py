"""Fixtures every suite shares.

chDB is one ClickHouse engine per process: every test in a pytest run must use the same
path (each test then uses its own database), so the path is made once, here.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"
