"""One Settings object: defaults run the embedded stack; production differs only by config.

Sources, strongest first: keyword arguments, environment (TOUCHFLOW_*, nested with "__",
e.g. TOUCHFLOW_RFM__WINDOW_DAYS=90), a YAML file named by TOUCHFLOW_CONFIG, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from pipeline import lifecycle, rfm, rules, stages, validation
from pipeline.state import Policy

EMBEDDED = "embedded"
FAUST_FETCH_MAX_WAIT_MS = 1500  # what Faust hard-codes for its worker consumer
TANSU_FETCH_MAX_WAIT_MS = 200  # see agents/consumer_tuning.py and docs/benchmarks.md


class RfmSettings(BaseModel):
    window_days: int = 365
    recency_days: tuple[int, int, int, int] = (7, 30, 90, 180)
    frequency_orders: tuple[int, int, int, int] = (2, 3, 5, 8)
    monetary_minor: tuple[int, int, int, int] = (20_000, 50_000, 100_000, 300_000)
    high_score: int = 3


class AiplSettings(BaseModel):
    interest_min_engagements: int = 1
    loyalty_min_orders: int = 2


class LifecycleSettings(BaseModel):
    """See pipeline.lifecycle.LifecyclePolicy for what each threshold means."""

    new_days: int = 30
    at_risk_days: int = 60
    rhythm_min_orders: int = 3
    rhythm_factor: float = 2.0
    rhythm_floor_days: int = 14
    dormant_days: int = 120
    churned_days: int = 240
    won_back_days: int = 30


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOUCHFLOW_", env_nested_delimiter="__", extra="forbid"
    )

    # Kafka. "embedded" = a local Tansu broker started by `touchflow demo` / `touchflow broker`.
    kafka_bootstrap: str = EMBEDDED
    # Broker quirk workarounds: "tansu" probes true log-end offsets for table recovery.
    # "auto" = tansu when the broker is the embedded one, none otherwise.
    broker_compat: Literal["auto", "none", "tansu"] = "auto"
    # How long touchflow's consumers (the worker's, agents/consumer_tuning; the ClickHouse
    # sink's; the automations') let the broker hold a fetch.
    # None: 1500 ms (Faust's) on Apache Kafka, which answers as soon as records are there;
    # TANSU_FETCH_MAX_WAIT_MS on Tansu, which holds every fetch for the whole wait.
    fetch_max_wait_ms: int | None = Field(default=None, ge=0)
    app_id: str = "touchflow"
    events_topic: str = "touchflow.events"
    changes_topic: str = "touchflow.segment-changes"
    dlq_topic: str = "touchflow.dlq"
    thresholds_topic: str = "touchflow.rfm-thresholds"
    # One customer across channels (agents/identity.py): events are re-keyed by person
    # through these two topics before segmentation (one more hop per event). Off: each
    # channel identity is its own person.
    identity_resolution: bool = True
    links_topic: str = "touchflow.identity-links"
    # Internal: a referred customer's first purchase, sent to the referrer's partition.
    referrals_topic: str = "touchflow.referrals"
    resolved_topic: str = "touchflow.resolved"
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Kafka security, for every client (workers, sink, `touchflow topics`); see
    # pipeline.kafka_security. SASL over an SSL protocol only: SASL_PLAINTEXT sends PLAIN
    # passwords in the clear and leaves even SCRAM's session unencrypted.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None  # CA bundle for the brokers' certificates; None = system CAs
    ssl_certfile: Path | None = None  # client certificate (mutual TLS), with ssl_keyfile
    ssl_keyfile: Path | None = None
    # Confluent-compatible schema registry, e.g. "http://registry:8081"; empty = the
    # embedded registry in schemas/registry.json (see pipeline.schema_registry).
    schema_registry_url: str = ""

    # ClickHouse: "chdb:///abs/path" (embedded) or "http(s)://user:pass@host:8123".
    clickhouse_dsn: str = ""  # empty = chdb under data_dir
    clickhouse_database: str = "touchflow"
    sink_group: str = "touchflow-sink"
    sink_batch_rows: int = Field(default=20_000, ge=1)
    sink_flush_seconds: float = Field(default=1.0, gt=0)
    # Once caught up (a fetch brings nothing new), the sink flushes a batch at least this
    # old instead of waiting for sink_flush_seconds: rows land sooner when traffic pauses,
    # and a table gets at most one insert per this many seconds. >= sink_flush_seconds: off.
    sink_idle_flush_seconds: float = Field(default=0.25, gt=0)
    # The sink's /metrics HTTP port (workers serve theirs on web_port); 0 = no server.
    sink_metrics_port: int = Field(default=0, ge=0, le=65535)
    # How often a worker refreshes its consumer-lag and state-size gauges.
    metrics_interval_seconds: float = Field(default=10.0, gt=0)

    data_dir: Path = Path("var")
    web_port: int = 6066
    # The URL other workers use to reach this one's web server (the lookup API forwards a
    # request to the worker that owns the person). Empty = http://127.0.0.1:<web_port>,
    # right for workers on one machine; on Kubernetes each pod's own DNS name (docs/lookup.md).
    web_url: str = ""
    # Bearer token of the lookup API (/v1/...); unset = the API answers 503 (off).
    api_token: SecretStr | None = None
    # A worker's lookup API for `touchflow whois`.
    api_url: str = "http://127.0.0.1:6066"
    # Last segment changes kept per person and brand for the lookup API (0 = none).
    lookup_recent_changes: int = Field(default=10, ge=0, le=1000)
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "warn"
    # Keyed-hash secret for pseudonymising personal ids at the edge (>= 16 bytes).
    pii_key: SecretStr | None = None

    rfm: RfmSettings = RfmSettings()
    # Per-brand RFM thresholds (brand slug -> thresholds); brands not listed use `rfm`.
    brand_rfm: dict[str, RfmSettings] = {}
    aipl: AiplSettings = AiplSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    # Tag and layer rules (see pipeline.rules); None = the built-in rules. `rules_file`
    # names a YAML file holding the same structure and wins over `rules`.
    rules: dict[str, Any] | None = None
    rules_file: Path | None = None
    # Named in every segment change, so a rebuild with new rules can be told apart.
    policy_version: str = "v1"
    # Brands scored by quantiles of their own buyers ("*" = every brand) instead of the
    # fixed thresholds: `touchflow rfm-quantiles --publish` (or the sink, every
    # rfm_quantiles_every_seconds) computes them in ClickHouse and workers pick them up.
    rfm_quantile_brands: list[str] = []
    rfm_quantiles_every_seconds: float = Field(default=0.0, ge=0)
    # Brand groups (group name -> its brands): each group keeps a cross-brand state of
    # every person, under the group's name in place of a brand (rules.brands.<group>
    # and brand_rfm.<group> apply to it).
    brand_groups: dict[str, list[str]] = {}
    dedup_window: int = Field(default=16, ge=1)  # recent event ids kept per person
    # How late an event may arrive (event time behind the partition's newest) and still
    # be ordered before due times; later ones are applied, scored at the newer clock, and
    # counted as late.
    allowed_lateness_seconds: float = Field(default=300.0, ge=0)
    # The worker applies events in micro-batches: up to this many, or what arrived within
    # this many seconds. A batch's segment changes are acknowledged by the broker before
    # its states are written to the changelog (docs/reliability.md).
    worker_batch_events: int = Field(default=500, ge=1)
    worker_batch_seconds: float = Field(default=0.05, gt=0)
    # A batch's states are written to the changelog (and its events acknowledged) at most
    # this long after the batch: the batches in between send their segment changes at
    # once and hold their states, so a busy person is written once per interval, not once
    # per batch (agents.write_behind.StateWrites); sooner once no event has come for a
    # batch window (worker_batch_seconds: the input is idle). 0: every batch writes its states.
    worker_state_write_seconds: float = Field(default=1.0, ge=0)
    # The worker's cyclic garbage collector (agents.collector): a young collection every
    # this many allocations (0: Python's own 700), and what is alive once a recovery
    # ends frozen out of later collections (a full one walks every state: ~1.3 s at 1M).
    gc_young_threshold: int = Field(default=10_000, ge=0)
    gc_freeze_after_recovery: bool = True
    # A worker that died unannounced (kill -9, lost node) holds its partitions this long
    # before the group gives them to others (Faust's broker_session_timeout).
    worker_session_timeout_seconds: float = Field(default=60.0, ge=6)
    brands: list[str] = []  # empty: accept any brand slug
    max_message_bytes: int = 64 * 1024

    @model_validator(mode="after")
    def _check_policies(self) -> Settings:
        self.policy()  # the domain objects validate their own invariants; fail at start-up
        return self

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        protocol = self.security_protocol
        if protocol.startswith("SASL_") and not (self.sasl_username and self.sasl_password):
            raise ValueError(f"security_protocol {protocol} needs sasl_username and sasl_password")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS)")
        if not protocol.endswith("SSL") and (self.ssl_cafile or self.ssl_certfile):
            raise ValueError(f"ssl_* files are set but security_protocol is {protocol}")
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
    def consumer_fetch_max_wait_ms(self) -> int:
        if self.fetch_max_wait_ms is not None:
            return self.fetch_max_wait_ms
        return TANSU_FETCH_MAX_WAIT_MS if self.tansu_compat else FAUST_FETCH_MAX_WAIT_MS

    @property
    def changelog_topic(self) -> str:
        """Faust names a table's changelog `<app id>-<table>-changelog`."""
        return f"{self.app_id}-person_state-changelog"

    def resolved_clickhouse_dsn(self) -> str:
        if self.clickhouse_dsn:
            return self.clickhouse_dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    def policy(self) -> Policy:
        rules_spec = self.rules
        if self.rules_file is not None:
            if not self.rules_file.is_file():
                raise ValueError(f"rules_file {self.rules_file} is not a file")
            rules_spec = yaml.safe_load(self.rules_file.read_text()) or {}
        return Policy(
            rfm=rfm.RfmPolicy(**self.rfm.model_dump()),
            brand_rfm={b: rfm.RfmPolicy(**r.model_dump()) for b, r in self.brand_rfm.items()},
            aipl=stages.AiplPolicy(**self.aipl.model_dump()),
            lifecycle=lifecycle.LifecyclePolicy(**self.lifecycle.model_dump()),
            rules=rules.compile_rules(rules_spec, version=self.policy_version),
            dedup_window=self.dedup_window,
            version=self.policy_version,
            brand_groups=self._groups_by_brand(),
        )

    def _groups_by_brand(self) -> dict[str, tuple[str, ...]]:
        by_brand: dict[str, list[str]] = {}
        for group, members in sorted(self.brand_groups.items()):
            if not validation.SLUG.match(group) or group in members:
                raise ValueError(f"brand_groups: {group!r} must be a slug and not its own member")
            if self.brands and group in self.brands:
                raise ValueError(f"brand_groups: {group!r} is also a brand")
            for brand in members:
                by_brand.setdefault(brand, []).append(group)
        return {b: tuple(g) for b, g in by_brand.items()}

    def advertised_web_url(self) -> str:
        return self.web_url or f"http://127.0.0.1:{self.web_port}"

    @property
    def allowed_lateness_ms(self) -> int:
        return int(self.allowed_lateness_seconds * 1000)

    def limits(self) -> validation.Limits:
        return validation.Limits(
            max_message_bytes=self.max_message_bytes,
            brands=frozenset(self.brands) if self.brands else None,
            groups=frozenset(self.brand_groups),
        )

    def pii_key_bytes(self) -> bytes:
        if self.pii_key is None:
            raise ValueError("TOUCHFLOW_PII_KEY is not set: it keys the hashing of personal ids")
        return self.pii_key.get_secret_value().encode()
