"""The deployment files agree with the code: settings names, ports, topics, metric names.

Static checks only (PyYAML + json): no Docker, no broker, no ClickHouse.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from pipeline.broker import topic_specs
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
PROMETHEUS_FILE = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_FILE = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "touchflow.json"
DATASOURCES_FILE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER_FILE = DEPLOY / "grafana" / "provisioning" / "dashboards" / "touchflow.yml"

# The Prometheus metrics touchflow exposes (or will: the code adding them must use exactly
# these names and labels). Alerts and the Grafana dashboard may use nothing else.
#   touchflow_events_consumed_total       counter    type, channel, brand (accepted events)
#   touchflow_events_rejected_total       counter    reason (dead-lettered events)
#   touchflow_segment_changes_total       counter    dimension, from_value, to_value
#   touchflow_sink_insert_failures_total  counter    table
#   touchflow_sink_rows_total             counter    table
#   touchflow_processing_latency_seconds  histogram
#   touchflow_consumer_lag                gauge      topic, partition
#   up                                    Prometheus' own scrape health
EXPECTED_METRICS = [
    "touchflow_events_consumed_total",
    "touchflow_events_rejected_total",
    "touchflow_segment_changes_total",
    "touchflow_sink_insert_failures_total",
    "touchflow_sink_rows_total",
    "touchflow_processing_latency_seconds",
    "touchflow_consumer_lag",
    # Added with the operations work (pipeline/metrics.py):
    #   touchflow_events_dead_lettered_total  counter    reason
    #   touchflow_duplicates_dropped_total    counter
    #   touchflow_emit_latency_seconds        histogram  (Kafka ingest -> change sent)
    #   touchflow_event_age_seconds           histogram  (event time -> change sent)
    #   touchflow_people_in_state             gauge
    #   touchflow_due_index_backlog           gauge
    #   touchflow_sink_batches_total          counter    table
    #   touchflow_sink_retries_total          counter    table
    #   touchflow_sink_batch_seconds          histogram
    "touchflow_events_dead_lettered_total",
    "touchflow_duplicates_dropped_total",
    "touchflow_emit_latency_seconds",
    "touchflow_event_age_seconds",
    "touchflow_people_in_state",
    "touchflow_due_index_backlog",
    "touchflow_sink_batches_total",
    "touchflow_sink_retries_total",
    "touchflow_sink_batch_seconds",
    # Added with the segmentation engine (agents/segmentation.py):
    "touchflow_late_events_total",
    "touchflow_redelivered_skipped_total",
    # Added with automations and the webhook bridge (pipeline/automation.py, webhooks.py):
    #   touchflow_automation_changes_total           counter    consumer, outcome
    #   touchflow_automation_handler_failures_total  counter    consumer
    #   touchflow_webhook_requests_total             counter    endpoint, result
    #   touchflow_webhook_request_seconds            histogram  endpoint
    #   touchflow_webhook_throttled_total            counter    endpoint
    "touchflow_automation_changes_total",
    "touchflow_automation_handler_failures_total",
    "touchflow_webhook_requests_total",
    "touchflow_webhook_request_seconds",
    "touchflow_webhook_throttled_total",
    # Added with bulk delivery (agents/bulk_delivery.py):
    #   touchflow_fetched_records_total  counter  topic, delivery (bulk | per_message)
    "touchflow_fetched_records_total",
    "up",
]
HISTOGRAMS = {
    "touchflow_processing_latency_seconds",
    "touchflow_emit_latency_seconds",
    "touchflow_event_age_seconds",
    "touchflow_sink_batch_seconds",
    "touchflow_webhook_request_seconds",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

METRIC_RE = re.compile(r"touchflow_[a-z_]+")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}
INTERPOLATION_RE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
# What a required variable (${VAR:?...}) stands for in these checks.
REQUIRED_PLACEHOLDER = "placeholder-secret-0123456789abcdef"


# -- helpers --------------------------------------------------------------------------------


def interpolate(value: Any) -> Any:
    """Compose-style interpolation with an empty environment: defaults, placeholders."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            op, arg = m.group("op"), m.group("arg")
            if op in (":-", "-"):
                return arg
            if op in (":?", "?"):
                return REQUIRED_PLACEHOLDER
            return ""

        return INTERPOLATION_RE.sub(sub, value.replace("$$", "\0")).replace("\0", "$")
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)  # resolves anchors and `<<` merge keys


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(load_yaml(COMPOSE_FILE))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def touchflow_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in env_of(service).items() if k.startswith("TOUCHFLOW_")}


def command_line(service: dict[str, Any]) -> str:
    """entrypoint + command as one shell-ish string (image entrypoint: `touchflow`)."""
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if value is None:
            if key == "entrypoint" and "build" in service:
                parts.append("touchflow")
            continue
        parts.extend(value if isinstance(value, list) else shlex.split(value))
    return " ".join(str(p) for p in parts)


def touchflow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services running the touchflow image (they are the ones built from the Dockerfile)."""
    return {name: s for name, s in services.items() if "build" in s}


def services_running(services: dict[str, dict[str, Any]], subcommand: str) -> list[str]:
    return sorted(
        name
        for name, s in touchflow_services(services).items()
        if command_line(s).split()[:2] == ["touchflow", subcommand]
    )


def published_ports(service: dict[str, Any]) -> list[tuple[int | None, int]]:
    """(host port or None, container port) for every entry of `ports`."""
    out: list[tuple[int | None, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            out.append((int(published) if published else None, int(entry["target"])))
            continue
        spec = str(entry).split("/", 1)[0]
        fields = spec.rsplit(":", 2)
        container = int(fields[-1])
        host = int(fields[-2]) if len(fields) >= 2 and fields[-2] else None
        out.append((host, container))
    return out


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """source -> container path for every entry of `volumes` (short or long syntax)."""
    out = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out[str(entry["source"])] = str(entry["target"])
        else:
            source, target = str(entry).split(":")[:2]
            out[source] = target
    return out


def settings_from_compose_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("TOUCHFLOW_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def metric_names(expr: str) -> set[str]:
    names = set()
    for name in METRIC_RE.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
                name = name.removesuffix(suffix)
                break
        names.add(name)
    if re.search(r"(?<![A-Za-z0-9_])up(?=\s*[{\[)]|\s*$|\s*[=!<>])", expr):
        names.add("up")
    return names


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS_FILE)["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels inside collapsed rows
    return out


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels() for t in p.get("targets", []) if "expr" in t]
    for var in dashboard().get("templating", {}).get("list", []):
        query = var.get("query")
        exprs.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    return [e for e in exprs if e]


def balanced(expr: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    in_string = False
    for ch in expr:
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not in_string


# -- every file parses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_deploy_yaml_parses(path: Path) -> None:
    with path.open() as f:
        docs = list(yaml.safe_load_all(f))  # Kubernetes files may hold several documents
    assert docs and all(isinstance(d, dict) for d in docs), f"{path} is not YAML mappings"


def test_expected_files_exist() -> None:
    for path in (PROMETHEUS_FILE, ALERTS_FILE, DASHBOARD_FILE, DATASOURCES_FILE):
        assert path.is_file(), path
    assert DASHBOARD_PROVIDER_FILE.is_file()
    assert isinstance(dashboard()["panels"], list)


# -- compose <-> Settings -------------------------------------------------------------------


def settings_field_problem(key: str) -> str | None:
    """Why the environment variable `key` is not a Settings field (None if it is one)."""
    if key == "TOUCHFLOW_CONFIG":  # read by Settings itself: the YAML config file
        return None
    fields = Settings.model_fields
    path = key.removeprefix("TOUCHFLOW_").lower().split("__")
    if path[0] not in fields:
        return f"{key} is not a Settings field"
    model: Any = fields[path[0]].annotation
    for part in path[1:]:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return f"{key} nests into {path[0]}, which is not a nested model"
        if part not in model.model_fields:
            return f"{key}: no field {part!r}"
        model = model.model_fields[part].annotation
    return None


def test_every_touchflow_env_var_is_a_settings_field(services: dict[str, dict[str, Any]]) -> None:
    seen = 0
    for name, service in services.items():
        for key in touchflow_env(service):
            seen += 1
            problem = settings_field_problem(key)
            assert problem is None, f"{name}: {problem}"
    assert seen, "docker-compose.yml sets no TOUCHFLOW_* variables"


def test_touchflow_services_share_one_environment(services: dict[str, dict[str, Any]]) -> None:
    tf = touchflow_services(services)
    assert set(tf) >= {"init", "worker-1", "worker-2", "sink"}
    envs = {name: touchflow_env(s) for name, s in tf.items()}
    reference = envs["worker-1"]
    for name, env in envs.items():
        assert env == reference, f"{name} has a different TOUCHFLOW_* environment"
    assert len({s["image"] for s in tf.values()}) == 1


def test_compose_environment_is_a_valid_production_configuration(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = touchflow_env(services["worker-1"])
    settings = settings_from_compose_env(env, monkeypatch)

    assert not settings.embedded_broker
    assert not settings.tansu_compat
    host, _, port = settings.kafka_bootstrap.partition(":")
    assert host == "kafka" and port == "9092"
    kafka_listeners = env_of(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"://{settings.kafka_bootstrap}" in kafka_listeners

    from urllib.parse import urlsplit

    dsn = urlsplit(settings.resolved_clickhouse_dsn())
    clickhouse = env_of(services["clickhouse"])
    assert dsn.scheme == "http" and dsn.hostname == "clickhouse" and dsn.port == 8123
    assert dsn.username == clickhouse["CLICKHOUSE_USER"]
    assert dsn.password == clickhouse["CLICKHOUSE_PASSWORD"]
    assert settings.clickhouse_database == clickhouse["CLICKHOUSE_DB"]

    assert len(settings.pii_key_bytes()) >= 16
    assert str(settings.data_dir) == "/var/lib/touchflow"
    for name in ("worker-1", "worker-2"):
        mounts = volume_mounts(services[name]).values()
        assert str(settings.data_dir) in mounts, f"{name} should keep its data dir on a volume"


def test_pii_key_is_required_not_defaulted() -> None:
    raw = load_yaml(COMPOSE_FILE)
    value = raw["x-touchflow-env"]["TOUCHFLOW_PII_KEY"]
    assert re.fullmatch(r"\$\{TOUCHFLOW_PII_KEY:\?[^}]+\}", value), value


# -- ports and scraping ---------------------------------------------------------------------


def test_worker_web_port_is_the_settings_default(services: dict[str, dict[str, Any]]) -> None:
    default_port = Settings.model_fields["web_port"].default
    assert default_port == 6066
    workers = services_running(services, "worker")
    assert workers == ["worker-1", "worker-2"]
    host_ports = []
    for name in workers:
        env = touchflow_env(services[name])
        in_container = int(env.get("TOUCHFLOW_WEB_PORT", default_port))
        assert in_container == default_port
        ports = published_ports(services[name])
        assert [c for _, c in ports] == [in_container], f"{name} publishes {ports}"
        host_ports.extend(h for h, _ in ports)
    assert host_ports == [6066, 6067]


def test_prometheus_scrapes_the_workers(services: dict[str, dict[str, Any]]) -> None:
    config = load_yaml(PROMETHEUS_FILE)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["touchflow-worker"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    web_port = Settings.model_fields["web_port"].default
    scraped = set()
    for target in targets:
        host, _, port = target.partition(":")
        assert host in services, f"scrape target {target}: no compose service {host!r}"
        container_ports = {c for _, c in published_ports(services[host])}
        assert int(port) == web_port and int(port) in container_ports, target
        scraped.add(host)
    assert scraped == set(services_running(services, "worker"))

    assert config["rule_files"] == ["alerts.yml"]
    assert volume_mounts(services["prometheus"])["./deploy/prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_grafana_provisioning_matches_compose(services: dict[str, dict[str, Any]]) -> None:
    datasources = load_yaml(DATASOURCES_FILE)["datasources"]
    assert len(datasources) == 1
    ds = datasources[0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    assert "prometheus" in services

    mounts = volume_mounts(services["grafana"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = load_yaml(DASHBOARD_PROVIDER_FILE)["providers"][0]
    assert provider["type"] == "file"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]

    # Every panel and query uses the provisioned datasource (by uid).
    uids = {p["datasource"]["uid"] for p in dashboard_panels() if p.get("datasource")}
    uids |= {
        t["datasource"]["uid"]
        for p in dashboard_panels()
        for t in p.get("targets", [])
        if t.get("datasource")
    }
    assert uids == {ds["uid"]}


# -- metric names ---------------------------------------------------------------------------


def test_alerts_use_only_expected_metrics() -> None:
    rules = alert_rules()
    for rule in rules:
        expr = rule["expr"]
        assert balanced(expr), f"{rule['alert']}: unbalanced brackets or quotes"
        names = metric_names(expr)
        assert names, f"{rule['alert']}: references no known metric"
        unknown = names - set(EXPECTED_METRICS)
        assert not unknown, f"{rule['alert']}: unknown metrics {sorted(unknown)}"
        assert rule.get("for"), f"{rule['alert']}: fires on a single evaluation"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
    required = {
        "TouchflowWorkerDown": {"up"},
        "TouchflowConsumerLagGrowing": {"touchflow_consumer_lag"},
        "TouchflowRejectionRateHigh": {"touchflow_events_rejected_total"},
        "TouchflowSinkInsertFailures": {"touchflow_sink_insert_failures_total"},
        "TouchflowProcessingLatencyHigh": {"touchflow_processing_latency_seconds"},
    }
    by_name = {r["alert"]: r for r in rules}
    for alert, metrics in required.items():
        assert alert in by_name, f"missing alert {alert}"
        assert metrics <= metric_names(by_name[alert]["expr"]), alert
    assert by_name["TouchflowConsumerLagGrowing"]["for"] == "10m"
    assert "0.99" in by_name["TouchflowProcessingLatencyHigh"]["expr"]
    assert "0.5" in by_name["TouchflowProcessingLatencyHigh"]["expr"]


def test_dashboard_uses_only_expected_metrics() -> None:
    exprs = dashboard_exprs()
    assert exprs
    used: set[str] = set()
    for expr in exprs:
        assert balanced(expr), expr
        unknown = metric_names(expr) - set(EXPECTED_METRICS)
        assert not unknown, f"dashboard query {expr!r}: unknown metrics {sorted(unknown)}"
        used |= metric_names(expr)
    # The dashboard shows every touchflow metric.
    assert {m for m in EXPECTED_METRICS if m.startswith("touchflow_")} <= used


def registry_names(registry: Any) -> dict[str, str]:
    """touchflow metric names declared in a prometheus registry -> their type."""
    declared = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        if name.startswith("touchflow_"):
            declared[name] = family.type
    return declared


def test_code_declares_exactly_the_expected_metrics() -> None:
    from pipeline import metrics

    declared = {}
    for registry in (metrics.WORKER, metrics.SINK, metrics.AUTOMATION):
        declared |= registry_names(registry)
    assert set(declared) == {m for m in EXPECTED_METRICS if m.startswith("touchflow_")}
    assert {n for n, kind in declared.items() if kind == "histogram"} == HISTOGRAMS


def test_histogram_suffixes_only_on_histograms() -> None:
    exprs = [r["expr"] for r in alert_rules()] + dashboard_exprs()
    for expr in exprs:
        for name in METRIC_RE.findall(expr):
            if name.endswith(HISTOGRAM_SUFFIXES) and name not in EXPECTED_METRICS:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert base in HISTOGRAMS, f"{name}: {base} is not a histogram"
            if name in HISTOGRAMS:
                pytest.fail(f"{expr!r}: use {name}_bucket/_sum/_count, not the bare histogram")


# -- images, ordering, topics ---------------------------------------------------------------


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        last = image.rsplit("/", 1)[-1]
        assert ":" in last or "@sha256:" in image, f"{name}: image {image} has no tag"
        tag = last.split(":", 1)[1] if ":" in last else ""
        assert tag and tag != "latest", f"{name}: image {image} is not pinned"
        if "build" in service:
            assert image == f"touchflow:{version}", f"{name}: tag the build with the version"

    dockerfile = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, flags=re.M))
    bases = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    assert bases, "Dockerfile names no base image"
    for ref in bases:
        base = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], ref)
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), base


def test_dockerfile_shape() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ENTRYPOINT \[\"touchflow\"\]$", dockerfile, flags=re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, flags=re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    # Editable install from /app: pipeline/codec.py finds schemas/ next to the packages.
    assert re.search(r"pip install .*-e \.", dockerfile)
    assert re.search(r"^WORKDIR /app$", dockerfile, flags=re.M)
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".git"} <= ignored
    # The domain core is compiled in the image for the image's Python, never copied in
    # from the host (docs/compiled-core.md), and the image checks that it runs compiled.
    assert {"pipeline/*.so", "pipeline/_compiled_core.json"} <= ignored
    assert re.search(r"^\s+&& python -m pipeline\.compiled_core", dockerfile, flags=re.M)
    assert "core_is_compiled" in dockerfile
    assert "c.events.reader_prebuilt and c.state.writers_prebuilt" in dockerfile  # Avro coders
    for needed in ("schemas", "pipeline", "agents", "sinks", "pyproject.toml"):
        assert needed not in ignored


def test_init_creates_topics_and_tables_first(services: dict[str, dict[str, Any]]) -> None:
    init = services["init"]
    line = command_line(init)
    assert "touchflow topics" in line and "touchflow migrate" in line
    assert line.index("touchflow topics") < line.index("touchflow migrate")
    assert str(init.get("restart")) == "no"
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    for name in [*services_running(services, "worker"), *services_running(services, "sink")]:
        dep = services[name]["depends_on"]["init"]["condition"]
        assert dep == "service_completed_successfully", name
    assert services_running(services, "sink") == ["sink"]


def test_dependencies_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in ("kafka", "clickhouse"):
        assert services[name].get("healthcheck", {}).get("test"), name
    assert "/ping" in " ".join(services["clickhouse"]["healthcheck"]["test"])
    kafka = env_of(services["kafka"])
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]


def test_partitions_from_compose_drive_topic_specs(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = touchflow_env(services["init"])
    partitions = int(env["TOUCHFLOW_PARTITIONS"])
    replication = int(env["TOUCHFLOW_REPLICATION_FACTOR"])
    default_partitions = Settings.model_fields["partitions"].default
    assert partitions != default_partitions, "compose should set the production partition count"

    settings = settings_from_compose_env(env, monkeypatch)
    assert settings.partitions == partitions
    specs = topic_specs(settings)
    assert {t.name for t in specs} == {
        settings.events_topic,
        settings.changes_topic,
        settings.dlq_topic,
        settings.changelog_topic,
        settings.links_topic,
        settings.resolved_topic,
        settings.referrals_topic,
        settings.thresholds_topic,
    }
    for topic in specs:
        # The thresholds topic is a handful of records keyed by brand: one partition.
        expected = 1 if topic.name == settings.thresholds_topic else partitions
        assert topic.num_partitions == expected, topic.name
        assert topic.replication_factor == replication, topic.name

    # One broker: no topic can have more replicas, and workers beyond the partition count idle.
    kafka_voters = env_of(services["kafka"])["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    brokers = [s for s in services if s.startswith("kafka")]
    assert replication <= len(brokers) == len(kafka_voters) == 1
    assert len(services_running(services, "worker")) <= partitions
    kafka = env_of(services["kafka"])
    assert int(kafka.get("KAFKA_NUM_PARTITIONS", partitions)) == partitions
    assert int(kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) <= len(brokers)
