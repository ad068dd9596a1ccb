"""One Settings object: embedded defaults, env and YAML overrides, errors at construction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TOUCHFLOW_* from the caller's shell; run in an empty directory."""
    for name in list(os.environ):
        if name.upper().startswith("TOUCHFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_run_the_embedded_stack(tmp_path: Path) -> None:
    s = Settings()
    assert s.kafka_bootstrap == "embedded"
    assert s.embedded_broker is True
    assert s.tansu_compat is True
    assert s.resolved_clickhouse_dsn() == f"chdb://{tmp_path.resolve()}/var/clickhouse"


def test_chdb_dsn_follows_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "elsewhere")
    assert s.resolved_clickhouse_dsn() == f"chdb://{tmp_path.resolve()}/elsewhere/clickhouse"


def test_an_explicit_dsn_wins() -> None:
    dsn = "https://user:pw@ch.example:8443"
    assert Settings(clickhouse_dsn=dsn).resolved_clickhouse_dsn() == dsn


def test_default_policy_is_the_classic_one() -> None:
    p = Settings().policy()
    assert p.rfm.window_days == 365
    assert p.rfm.recency_days == (7, 30, 90, 180)
    assert p.rfm.frequency_orders == (2, 3, 5, 8)
    assert p.rfm.monetary_minor == (20_000, 50_000, 100_000, 300_000)
    assert p.rfm.high_score == 3
    assert (p.aipl.interest_min_engagements, p.aipl.loyalty_min_orders) == (1, 2)


def test_external_bootstrap_from_env_turns_off_tansu_compat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOUCHFLOW_KAFKA_BOOTSTRAP", "host:9092")
    s = Settings()
    assert s.kafka_bootstrap == "host:9092"
    assert s.embedded_broker is False
    assert s.tansu_compat is False


def test_broker_compat_can_force_tansu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHFLOW_KAFKA_BOOTSTRAP", "host:9092")
    monkeypatch.setenv("TOUCHFLOW_BROKER_COMPAT", "tansu")
    assert Settings().tansu_compat is True


def test_nested_env_sets_the_rfm_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHFLOW_RFM__WINDOW_DAYS", "90")
    assert Settings().policy().rfm.window_days == 90


def test_brands_from_env_become_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHFLOW_BRANDS", '["lumi", "aura"]')
    assert Settings().limits().brands == frozenset({"lumi", "aura"})
    monkeypatch.delenv("TOUCHFLOW_BRANDS")
    assert Settings().limits().brands is None


def test_yaml_file_named_by_touchflow_config_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "touchflow.yaml"
    config.write_text(
        "kafka_bootstrap: kafka-1:9092\n"
        "partitions: 12\n"
        "rfm:\n"
        "  window_days: 180\n"
        "  high_score: 4\n"
        "aipl:\n"
        "  loyalty_min_orders: 3\n"
    )
    monkeypatch.setenv("TOUCHFLOW_CONFIG", str(config))
    s = Settings()
    assert s.kafka_bootstrap == "kafka-1:9092"
    assert s.partitions == 12
    p = s.policy()
    assert (p.rfm.window_days, p.rfm.high_score, p.aipl.loyalty_min_orders) == (180, 4, 3)


def test_env_is_stronger_than_the_yaml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "touchflow.yaml"
    config.write_text("rfm:\n  window_days: 180\n  high_score: 4\n")
    monkeypatch.setenv("TOUCHFLOW_CONFIG", str(config))
    monkeypatch.setenv("TOUCHFLOW_RFM__WINDOW_DAYS", "90")
    p = Settings().policy()
    assert (p.rfm.window_days, p.rfm.high_score) == (90, 4)


def test_a_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOUCHFLOW_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        Settings()


@pytest.mark.parametrize(
    "rfm",
    [
        {"recency_days": (30, 7, 90, 180)},
        {"frequency_orders": (2, 2, 5, 8)},
        {"monetary_minor": (300_000, 100_000, 50_000, 20_000)},
        {"high_score": 6},
        {"window_days": 0},
    ],
    ids=["recency", "frequency", "monetary", "high-score", "window"],
)
def test_an_invalid_rfm_policy_fails_at_construction(rfm: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(rfm=rfm)


def test_an_invalid_threshold_in_the_yaml_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "touchflow.yaml"
    config.write_text("rfm:\n  recency_days: [7, 30, 30, 180]\n")
    monkeypatch.setenv("TOUCHFLOW_CONFIG", str(config))
    with pytest.raises(ValidationError, match="recency_days"):
        Settings()


def test_an_invalid_aipl_policy_fails_at_construction() -> None:
    with pytest.raises(ValidationError):
        Settings(aipl={"loyalty_min_orders": 1})


def test_unknown_keys_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "touchflow.yaml"
    config.write_text("kafka_bootstrp: typo:9092\n")
    monkeypatch.setenv("TOUCHFLOW_CONFIG", str(config))
    with pytest.raises(ValidationError, match="kafka_bootstrp"):
        Settings()


def test_pii_key_is_required_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="TOUCHFLOW_PII_KEY"):
        Settings().pii_key_bytes()
    monkeypatch.setenv("TOUCHFLOW_PII_KEY", "0123456789abcdef-secret")
    s = Settings()
    assert s.pii_key_bytes() == b"0123456789abcdef-secret"
    assert "0123456789abcdef-secret" not in repr(s)
