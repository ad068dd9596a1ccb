"""One Settings object: defaults run the embedded stack; production differs only by config.

Sources, strongest first: keyword arguments, environment (TOUCHFLOW_*, nested with "__",
e.g. TOUCHFLOW_RFM__WINDOW_DAYS=90), a YAML file named by TOUCHFLOW_CONFIG, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from pipeline import rfm, stages, validation
from pipeline.state import Policy

EMBEDDED = "embedded"


class RfmSettings(BaseModel):
    window_days: int = 365
    recency_days: tuple[int, int, int, int] = (7, 30, 90, 180)
    frequency_orders: tuple[int, int, int, int] = (2, 3, 5, 8)
    monetary_minor: tuple[int, int, int, int] = (20_000, 50_000, 100_000, 300_000)
    high_score: int = 3


class AiplSettings(BaseModel):
    interest_min_engagements: int = 1
    loyalty_min_orders: int = 2


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOUCHFLOW_", env_nested_delimiter="__", extra="forbid"
    )

    # Kafka. "embedded" = a local Tansu broker started by `touchflow demo` / `touchflow broker`.
    kafka_bootstrap: str = EMBEDDED
    # Broker quirk workarounds: "tansu" probes true log-end offsets for table recovery.
    # "auto" = tansu when the broker is the embedded one, none otherwise.
    broker_compat: Literal["auto", "none", "tansu"] = "auto"
    app_id: str = "touchflow"
    events_topic: str = "touchflow.events"
    changes_topic: str = "touchflow.segment-changes"
    dlq_topic: str = "touchflow.dlq"
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    # ClickHouse: "chdb:///abs/path" (embedded) or "http(s)://user:pass@host:8123".
    clickhouse_dsn: str = ""  # empty = chdb under data_dir
    clickhouse_database: str = "touchflow"
    sink_group: str = "touchflow-sink"
    sink_batch_rows: int = Field(default=20_000, ge=1)
    sink_flush_seconds: float = Field(default=1.0, gt=0)

    data_dir: Path = Path("var")
    web_port: int = 6066
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "warn"
    # Keyed-hash secret for pseudonymising personal ids at the edge (>= 16 bytes).
    pii_key: SecretStr | None = None

    rfm: RfmSettings = RfmSettings()
    aipl: AiplSettings = AiplSettings()
    brands: list[str] = []  # empty: accept any brand slug
    max_message_bytes: int = 64 * 1024

    @model_validator(mode="after")
    def _check_policies(self) -> Settings:
        self.policy()  # the domain objects validate their own invariants; fail at start-up
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        config_file = os.environ.get("TOUCHFLOW_CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(
                    f"TOUCHFLOW_CONFIG names {config_file}, which is not a file"
                )
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    # -- derived -------------------------------------------------------------------------

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap == EMBEDDED

    @property
    def tansu_compat(self) -> bool:
        if self.broker_compat == "auto":
            return self.embedded_broker
        return self.broker_compat == "tansu"

    @property
    def changelog_topic(self) -> str:
        """Faust names a table's changelog `<app id>-<table>-changelog`."""
        return f"{self.app_id}-person_state-changelog"

    def resolved_clickhouse_dsn(self) -> str:
        if self.clickhouse_dsn:
            return self.clickhouse_dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    def policy(self) -> Policy:
        return Policy(
            rfm=rfm.RfmPolicy(**self.rfm.model_dump()),
            aipl=stages.AiplPolicy(**self.aipl.model_dump()),
        )

    def limits(self) -> validation.Limits:
        return validation.Limits(
            max_message_bytes=self.max_message_bytes,
            brands=frozenset(self.brands) if self.brands else None,
        )

    def pii_key_bytes(self) -> bytes:
        if self.pii_key is None:
            raise ValueError("TOUCHFLOW_PII_KEY is not set: it keys the hashing of personal ids")
        return self.pii_key.get_secret_value().encode()
