"""The operations kit in deploy/ against a real gateway: the Grafana dashboard and the alert rules
query only metrics that `prism serve` exports, promtool accepts and unit-tests the rules, and the
compose file and Kubernetes example agree with the gateway they run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from serve_helpers import PRISM, serving

from prism.testing.servers._base import free_port, required

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "prism-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes" / "prism.yaml"

#: Metrics a Prometheus server makes itself, which rules may use beside Prism's own.
PROMETHEUS_OWN = {"up"}
#: Grafana's variables, replaced by values Prometheus accepts before checking an expression.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*"}
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")
_FUNCTIONS_AND_KEYWORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "max", "min", "and", "or", "without",
    "le", "namespace", "backend", "engine", "outcome", "method", "limit", "reason", "status",
    "transport", "code", "bool", "on", "ignoring", "result", "tier",
}  # fmt: skip


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (Debian package prometheus; .ci/run installs it)"
        if required("promtool"):
            pytest.fail(message + " (PRISM_REQUIRE_BACKENDS requires it)", pytrace=False)
        pytest.skip(message)
    return found


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return exprs


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """Every metric named in ``expr`` with the labels its selector matches on."""
    for value in GRAFANA_VARIABLES:
        expr = expr.replace(value, GRAFANA_VARIABLES[value])
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values and strings never name metrics
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    for match in _SELECTOR.finditer(expr):
        name, matchers = match.group(1), match.group(2) or ""
        if name in _FUNCTIONS_AND_KEYWORDS:
            continue
        if expr[match.end() :].lstrip().startswith("(") and not matchers:
            continue  # a function call
        yield name, {m.group(1) for m in _LABEL.finditer(matchers)}


class Exported:
    """What a running ``prism serve`` exports: sample names and, where it has samples, label names."""

    def __init__(self, text: str) -> None:
        self.names: set[str] = set()
        self.labels: dict[str, set[str]] = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
                self.names.update(name + s for s in suffixes)
            elif line and not line.startswith("#"):
                sample = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?", line)
                assert sample is not None
                labels = {m.group(1) for m in re.finditer(r'([a-zA-Z_]\w*)="', sample.group(2) or "")}
                self.labels.setdefault(sample.group(1), set()).update(labels)

    def check(self, expr: str) -> list[str]:
        """What ``expr`` asks for that is not exported (empty when all of it is)."""
        missing = []
        for name, labels in _selectors(expr):
            if name in PROMETHEUS_OWN:
                continue
            if name not in self.names:
                missing.append(f"metric {name}")
            elif name in self.labels and not labels <= self.labels[name] | {"le", "instance", "job"}:
                missing.append(f"labels {sorted(labels - self.labels[name])} of {name}")
        return missing


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The metrics of a zero-config ``prism serve`` (gRPC on) after a write, a read and a miss."""
    cwd = tmp_path_factory.mktemp("served")
    with serving(cwd, None, "--grpc-port", str(free_port())) as served:
        base = f"http://127.0.0.1:{served.port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.put("/v1/kv/default/k", content=b"v").status_code in (200, 201, 204)
            assert client.get("/v1/kv/default/k").status_code == 200
            assert client.get("/v1/kv/default/missing").status_code == 404
            for probe in ("/healthz", "/readyz"):
                assert client.get(probe).status_code == 200
            return Exported(client.get("/metrics").text)


def test_every_dashboard_query_names_metrics_and_labels_prism_exports(exported: Exported) -> None:
    missing = {expr: gaps for expr in _dashboard_expressions() if (gaps := exported.check(expr))}
    assert missing == {}


def test_every_alert_rule_names_metrics_and_labels_prism_exports(exported: Exported) -> None:
    missing = {r["alert"]: gaps for r in _alert_rules() if (gaps := exported.check(r["expr"]))}
    assert missing == {}


def test_the_metric_check_notices_a_metric_or_label_prism_does_not_export(exported: Exported) -> None:
    assert exported.check('sum(rate(prism_http_requests_total{status="500"}[5m]))') == []
    assert exported.check("sum(rate(prism_http_request_total[5m]))") == ["metric prism_http_request_total"]
    assert exported.check('rate(prism_kv_stats_total{tier="near"}[5m])') == [
        "labels ['tier'] of prism_kv_stats_total"
    ]


def test_promtool_accepts_the_rules_and_the_dashboard_queries(tmp_path: Path) -> None:
    promtool = _promtool()
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The dashboard's queries, as recording rules: promtool parses each one.
    exprs = _dashboard_expressions()
    for value, replacement in GRAFANA_VARIABLES.items():
        exprs = [e.replace(value, replacement) for e in exprs]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alert_rules_fire_as_their_unit_tests_say() -> None:
    promtool = _promtool()
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], cwd=ALERTS.parent, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_alerts = set(re.findall(r"alertname: (\w+)", (ALERTS.parent / "alerts_test.yml").read_text()))
    assert tested_alerts == {r["alert"] for r in _alert_rules()}, "every alert has a unit test"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_compose_file_mounts_files_that_exist_and_scrapes_the_gateway(tmp_path: Path) -> None:
    compose = _compose()
    services = compose["services"]
    assert {"prism", "redis", "postgres", "prometheus", "grafana", "otel-collector"} <= set(services)
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).resolve().exists(), f"{name} mounts a missing {source}"
    build = services["prism"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve().is_file()
    # Prometheus scrapes the gateway's published port and loads the alert rules.
    prometheus = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["prism:8080"] and "8080:8080" in services["prism"]["ports"]
    shutil.copy(COMPOSE.parent / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    checked = subprocess.run(
        [_promtool(), "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Grafana is provisioned with the dashboard of deploy/grafana.
    provider = yaml.safe_load((COMPOSE.parent / "grafana" / "dashboards.yaml").read_text())
    dashboards_dir = provider["providers"][0]["options"]["path"]
    mounted = [v for v in services["grafana"]["volumes"] if v.startswith("../grafana/prism-dashboard.json:")]
    assert mounted and mounted[0].split(":")[1].startswith(dashboards_dir + "/")


def test_the_compose_gateway_config_passes_config_check_with_secrets_from_the_environment() -> None:
    config = COMPOSE.parent / "prism.yaml"
    assert "password" not in config.read_text().lower().replace("${postgres_password}", "")
    env = dict(os.environ, POSTGRES_PASSWORD="pw", PRISM_ADMIN_KEY_SHA256="ab" * 32)
    checked = subprocess.run(
        [PRISM, "config", "check", "--config", str(config)], env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    unset = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
    refused = subprocess.run(
        [PRISM, "config", "check", "--config", str(config)], env=unset, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "POSTGRES_PASSWORD" in refused.stdout + refused.stderr


def test_docker_compose_accepts_the_compose_file() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip(
            "docker compose is not installed here; the compose file's parts are checked by the other tests"
        )
    env = dict(os.environ, POSTGRES_PASSWORD="pw", PRISM_ADMIN_KEY_SHA256="ab" * 32)
    checked = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def _kubernetes() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(KUBERNETES.read_text())}


def test_the_kubernetes_example_probes_the_gateway_and_drains_within_its_grace(exported: Exported) -> None:
    docs = _kubernetes()
    assert set(docs) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    # The probes ask the routes the gateway answers (the fixture's server answered both with 200).
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The same gateway config as the compose file, mounted where the container reads it.
    config_text = docs["ConfigMap"]["data"]["prism.yaml"]
    assert yaml.safe_load(config_text) == yaml.safe_load((COMPOSE.parent / "prism.yaml").read_text())
    mount = container["volumeMounts"][0]["mountPath"]
    assert f"{mount}/prism.yaml" in container["args"]
    # A draining replica finishes within the grace period: shutdown_timeout plus the preStop pause.
    shutdown = yaml.safe_load(config_text)["server"]["shutdown_timeout"]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > shutdown + pause
    # Every selector picks the pods of the Deployment.
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert docs["Service"]["spec"]["selector"] == labels
    # Console sessions are per replica: a user's requests stay on one.
    assert docs["Service"]["spec"]["sessionAffinity"] == "ClientIP"
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    # Secrets come from a Secret, never from the manifest.
    assert container["envFrom"] == [{"secretRef": {"name": "prism-secrets"}}]
