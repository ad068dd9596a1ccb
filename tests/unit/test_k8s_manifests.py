"""deploy/k8s agrees with the code and with docker-compose.yml.

Static checks (PyYAML, multi-document files): every TOUCHFLOW_* variable is a Settings
field and together they make a valid production Settings; ports are the ones the code
serves; probes and scrapes point at paths the worker really registers; selectors match.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
import yaml

from agents import web
from pipeline.settings import Settings
from tests.integration.test_deploy_config import (
    COMPOSE_FILE,
    PROMETHEUS_FILE,
    interpolate,
    settings_field_problem,
    settings_from_compose_env,
    touchflow_env,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "touchflow"


def documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        with path.open() as f:
            for doc in yaml.safe_load_all(f):
                yield path, doc


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, for every Kubernetes object in deploy/k8s."""
    out = {}
    for path, doc in documents():
        if doc.get("kind") == "Kustomization":
            continue
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in out, f"{path}: {key} defined twice"
        out[key] = doc
    return out


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(obj)["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def environment(
    objects: dict[tuple[str, str], dict[str, Any]], c: dict[str, Any]
) -> dict[str, str]:
    """The TOUCHFLOW_* environment a container gets: envFrom ConfigMaps/Secrets, then env."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects["ConfigMap", source["configMapRef"]["name"]]["data"])
        else:
            env.update(objects["Secret", source["secretRef"]["name"]]["stringData"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return {k: str(v) for k, v in env.items() if k.startswith("TOUCHFLOW_")}


def deployed(
    objects: dict[tuple[str, str], dict[str, Any]],
    workload: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[dict[str, Any], Settings]:
    """A workload's container and the Settings its environment gives the process."""
    c = container(objects[workload])
    return c, settings_from_compose_env(environment(objects, c), monkeypatch)


def worker_paths() -> set[str]:
    """The HTTP paths `touchflow worker` registers on its Faust web server."""
    app = faust.App("probe-paths", broker="kafka://127.0.0.1:1")
    web.register(app, Settings(kafka_bootstrap="127.0.0.1:1"))
    return {view.view_path for view in app.web.views.values()}


def test_every_file_parses_and_is_listed(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert kustomization["namespace"] == NAMESPACE
    for (kind, name), obj in objects.items():
        assert obj["apiVersion"], name
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, f"{kind}/{name}"
    assert {k for k, _ in objects} >= {
        "Namespace", "ConfigMap", "Secret", "StatefulSet", "Deployment", "Service",
        "ServiceMonitor", "PodDisruptionBudget", "Job",
    }  # fmt: skip


def test_every_touchflow_variable_is_a_settings_field(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    keys = set(objects["ConfigMap", "touchflow-config"]["data"])
    keys |= set(objects["Secret", "touchflow-secrets"]["stringData"])
    for obj in objects.values():
        if "template" in obj.get("spec", {}):
            keys |= {e["name"] for e in container(obj).get("env", [])}
    touchflow = {k for k in keys if k.startswith("TOUCHFLOW_")}
    assert touchflow
    problems = [p for k in sorted(touchflow) if (p := settings_field_problem(k))]
    assert not problems
    secrets = objects["Secret", "touchflow-secrets"]["stringData"]
    assert {"TOUCHFLOW_PII_KEY", "TOUCHFLOW_SASL_PASSWORD", "TOUCHFLOW_CLICKHOUSE_DSN"} <= set(
        secrets
    )
    assert all("REPLACE" in v for v in secrets.values()), "secret.yaml holds placeholders only"


@pytest.mark.parametrize(
    "workload",
    [
        ("StatefulSet", "touchflow-worker"),
        ("Deployment", "touchflow-sink"),
        ("Job", "touchflow-migrate"),
    ],
)
def test_environment_is_a_valid_production_configuration(
    objects: dict[tuple[str, str], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    workload: tuple[str, str],
) -> None:
    c, s = deployed(objects, workload, monkeypatch)
    assert not s.embedded_broker and not s.tansu_compat
    assert s.security_protocol == "SASL_SSL" and s.sasl_mechanism.startswith("SCRAM-")
    assert s.ssl_cafile is not None
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert s.ssl_cafile.parent == Path(mounts["kafka-ca"])
    volumes = {v["name"]: v for v in pod_spec(objects[workload])["volumes"]}
    ca_secret = objects["Secret", volumes["kafka-ca"]["secret"]["secretName"]]
    assert s.ssl_cafile.name in ca_secret["stringData"]
    assert s.resolved_clickhouse_dsn().startswith("http")
    assert len(s.pii_key_bytes()) >= 16
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert c["image"] == f"touchflow:{version}"


def test_worker_statefulset(
    objects: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sts = objects["StatefulSet", "touchflow-worker"]
    c, s = deployed(objects, ("StatefulSet", "touchflow-worker"), monkeypatch)
    assert c["args"] == ["worker"]
    assert 1 <= sts["spec"]["replicas"] <= s.partitions, "workers beyond partitions idle"

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"web": s.web_port}
    paths = worker_paths()
    assert {"/metrics", "/healthz", "/readyz"} <= paths
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] in paths, probe
        assert c[probe]["httpGet"]["port"] in ports, probe
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]

    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert str(s.data_dir) in mounts
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert {m["name"] for m in c["volumeMounts"] if m["mountPath"] == str(s.data_dir)} <= claims


def test_sink_deployment(
    objects: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, s = deployed(objects, ("Deployment", "touchflow-sink"), monkeypatch)
    assert c["args"] == ["sink"]
    assert s.sink_metrics_port > 0
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": s.sink_metrics_port}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert c["resources"]["limits"]["memory"]


def test_services_pdb_and_monitor_select_the_pods(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    def labels(kind: str, name: str) -> dict[str, str]:
        template: dict[str, str] = objects[kind, name]["spec"]["template"]["metadata"]["labels"]
        return template

    def selects(selector: dict[str, str], target: dict[str, str]) -> bool:
        return selector.items() <= target.items()

    worker = labels("StatefulSet", "touchflow-worker")
    sink = labels("Deployment", "touchflow-sink")
    sts = objects["StatefulSet", "touchflow-worker"]
    assert selects(sts["spec"]["selector"]["matchLabels"], worker)
    assert sts["spec"]["serviceName"] == "touchflow-worker"
    pdb = objects["PodDisruptionBudget", "touchflow-worker"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], worker)
    assert pdb["spec"]["maxUnavailable"] == 1

    monitor = objects["ServiceMonitor", "touchflow"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    for name, pods, kind in (
        ("touchflow-worker", worker, "StatefulSet"),
        ("touchflow-sink", sink, "Deployment"),
    ):
        service = objects["Service", name]
        assert selects(service["spec"]["selector"], pods), name
        assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        port = {p["name"]: p for p in service["spec"]["ports"]}[endpoint["port"]]
        ports = container(objects[kind, name])["ports"]
        container_ports = {p["name"]: p["containerPort"] for p in ports}
        assert container_ports[port["targetPort"]] == port["port"], name
    # Prometheus' job label is the Service name: the one alerts.yml matches for workers.
    assert objects["Service", "touchflow-worker"]["spec"]["publishNotReadyAddresses"] is True


def test_migration_job_creates_topics_then_tables(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    job = objects["Job", "touchflow-migrate"]
    c = container(job)
    line = " ".join([*c["command"], *c["args"]])
    assert line.index("touchflow topics") < line.index("touchflow migrate")
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")


def test_compose_and_kubernetes_agree(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    compose = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()))["services"]
    compose_env = touchflow_env(compose["sink"])
    k8s_env = objects["ConfigMap", "touchflow-config"]["data"]
    port = compose_env["TOUCHFLOW_SINK_METRICS_PORT"]
    assert k8s_env["TOUCHFLOW_SINK_METRICS_PORT"] == port
    assert port in {str(p) for p in compose["sink"]["expose"]}
    jobs = {j["job_name"]: j for j in yaml.safe_load(PROMETHEUS_FILE.read_text())["scrape_configs"]}
    assert [t for sc in jobs["touchflow-sink"]["static_configs"] for t in sc["targets"]] == [
        f"sink:{port}"
    ]
    # Same names for the same things on both sides.
    for key in ("TOUCHFLOW_CLICKHOUSE_DATABASE", "TOUCHFLOW_DATA_DIR", "TOUCHFLOW_BROKER_COMPAT"):
        assert k8s_env[key] == compose_env[key], key
    healthcheck = " ".join(compose["worker-1"]["healthcheck"]["test"])
    assert "/readyz" in healthcheck
