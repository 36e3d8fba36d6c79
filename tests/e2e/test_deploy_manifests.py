"""deploy/kubernetes renders with kustomize and every rendered manifest validates against the
Kubernetes schemas (kubernetes-validate, strict, oldest supported and newest version); the
one CRD (ServiceMonitor) is on an explicit allow-list and checked against the Service it
selects. The manifests agree with the gateway: the ConfigMap's config starts the real CLI
with the container's args and env, probes hit /health on the served port, the grace period
covers preStop + shutdownTimeoutMs, selectors match pods. deploy/compose passes
``docker-compose config`` and every file it mounts exists; its Prometheus config passes
``promtool check config`` with the mounted rule file."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml

from chromagent_proxy import DefaultBackendRegistry
from chromagent_proxy.core.config_load import build_config
from tests.support.cli_process import launch
from tests.support.prometheus import prometheus_binary
from tests.support.tools import require

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose"
TARGETS = ["base", "overlays/single", "overlays/fleet-with-redis", "examples/sidecar"]
# Kubernetes versions the manifests must be valid for: native sidecars need 1.29.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
# Custom resources: no schema in kubernetes-validate; checked by hand below.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
GATEWAY_LABELS = {"app.kubernetes.io/name": "chromagent", "app.kubernetes.io/component": "gateway"}


def render(target: str) -> list[dict[str, Any]]:
    tool = require(
        ["kubectl", "kustomize"],
        "the Kubernetes manifests are rendered with kustomize",
        "install kubectl >= 1.27 or kustomize >= 5",
    )
    cmd = [tool, "kustomize"] if tool.endswith("kubectl") else [tool, "build"]
    r = subprocess.run([*cmd, str(K8S / target)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in by_kind(docs, kind)])
    return found[0]


def gateway_container(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    every = spec["containers"] + spec.get("initContainers", [])
    return next(c for c in every if c["name"] == "gateway")


def pod_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment, secret values replaced by placeholders."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        env[e["name"]] = f"from-secret-{ref['key']}" if ref else e["value"]
    return env


def config_of(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    mount = next(m for m in gateway_container(deployment)["volumeMounts"] if m["mountPath"] == "/etc/chromagent")  # fmt: skip
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm = one(docs, "ConfigMap", volume["configMap"]["name"])
    args = gateway_container(deployment)["args"]
    assert args == ["--config", "/etc/chromagent/config.json"]
    parsed: dict[str, Any] = json.loads(cm["data"]["config.json"])
    return parsed


@pytest.mark.parametrize("target", TARGETS)
def test_manifests_render_and_validate(target: str) -> None:
    docs = render(target)
    assert docs
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRDS:
            continue
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(
                    f"{target}: {doc['kind']}/{doc['metadata']['name']} invalid for "
                    f"Kubernetes {version}: {exc.message} at {list(exc.path)}"
                ) from None
    unknown = {(d["apiVersion"], d["kind"]) for d in docs} & CRDS
    assert unknown <= CRDS


@pytest.mark.parametrize("target", ["base", "overlays/single", "overlays/fleet-with-redis"])
def test_gateway_deployment_agrees_with_the_gateway(target: str) -> None:
    docs = render(target)
    dep = one(docs, "Deployment", "chromagent")
    pod = dep["spec"]["template"]
    c = gateway_container(dep)
    cfg = build_config(
        config_of(docs, dep), env=pod_env(c), known_types=DefaultBackendRegistry().types()
    )
    # Probes: /health on the port the gateway serves.
    port = next(p for p in c["ports"] if p["name"] == "http")
    assert port["containerPort"] == cfg.port and cfg.host == "0.0.0.0"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    # A drain finishes before SIGKILL: preStop sleep + shutdownTimeoutMs <= grace period.
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert int(pre_stop[1]) + cfg.shutdown_timeout_ms / 1000 < grace
    # Keys come from a Secret, never from the manifests.
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert refs == {"chromagent-keys"} and by_kind(docs, "Secret") == []
    assert "GATEWAY_API_KEYS" in pod_env(c) and cfg.api_keys
    # Selectors pick exactly the gateway pods.
    assert pod["metadata"]["labels"] == GATEWAY_LABELS
    assert dep["spec"]["selector"]["matchLabels"] == GATEWAY_LABELS
    svc = one(docs, "Service", "chromagent")
    assert svc["spec"]["selector"] == GATEWAY_LABELS
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    spreads = pod["spec"]["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spreads} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    assert all(s["labelSelector"]["matchLabels"] == GATEWAY_LABELS for s in spreads)
    if target == "overlays/single":
        assert dep["spec"]["replicas"] == 1
        assert by_kind(docs, "HorizontalPodAutoscaler") == []
        assert by_kind(docs, "PodDisruptionBudget") == []
        return
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == GATEWAY_LABELS
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "chromagent",
    }
    if target == "overlays/fleet-with-redis":
        # The gateways share the Redis this overlay runs.
        redis_svc = one(docs, "Service", "chromagent-redis")
        assert cfg.rate_limit is not None and cfg.rate_limit.redis_url == (
            f"redis://chromagent-redis:{redis_svc['spec']['ports'][0]['port']}/0"
        )
        redis_pod = one(docs, "Deployment", "chromagent-redis")["spec"]["template"]
        assert redis_svc["spec"]["selector"] == redis_pod["metadata"]["labels"]
        # The ServiceMonitor scrapes /metrics on a port the Service has, labelled job=chromagent.
        sm = one(docs, "ServiceMonitor", "chromagent")
        assert sm["spec"]["selector"]["matchLabels"] == GATEWAY_LABELS
        assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "chromagent"
        svc_ports = {p["name"] for p in svc["spec"]["ports"]}
        assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [("http", "/metrics")]
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= svc_ports
        assert hpa["spec"]["minReplicas"] == 3


def test_sidecar_example_agrees_with_the_gateway() -> None:
    docs = render("examples/sidecar")
    dep = one(docs, "Deployment", "my-app")
    spec = dep["spec"]["template"]["spec"]
    gw = gateway_container(dep)
    assert gw in spec["initContainers"] and gw["restartPolicy"] == "Always"  # native sidecar
    cfg = build_config(
        config_of(docs, dep), env=pod_env(gw), known_types=DefaultBackendRegistry().types()
    )
    assert cfg.host == "127.0.0.1"  # only the pod's own containers reach it
    app = next(c for c in spec["containers"] if c["name"] == "app")
    assert pod_env(app)["OPENAI_BASE_URL"] == f"http://127.0.0.1:{cfg.port}/v1"
    assert gw["startupProbe"]["httpGet"]["port"] == cfg.port
    assert cfg.shutdown_timeout_ms / 1000 < spec["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("target", ["overlays/fleet-with-redis", "examples/sidecar"])
async def test_rendered_config_starts_the_real_gateway(target: str, tmp_path: Path) -> None:
    """The ConfigMap's config.json, with the container's args and env, starts the CLI."""
    docs = render(target)
    dep = by_kind(docs, "Deployment")[-1] if target.startswith("examples") else one(docs, "Deployment", "chromagent")  # fmt: skip
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(config_of(docs, dep)))
    c = gateway_container(dep)
    args = [a if a != "/etc/chromagent/config.json" else str(cfg_file) for a in c["args"]]
    p = launch([*args, "--port", "0", "--log-format", "text"], tmp_path, "gw", env=pod_env(c))
    try:
        m = await p.wait_for(r"listening on (http://\S+)", stream="out")
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{m.group(1)}/health") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with s.get(f"{m.group(1)}/metrics") as r:
                assert (
                    r.status == 200 and "gen_ai_server_request_duration_seconds" in await r.text()
                )
    finally:
        await p.close()


# ---------------------------------------------------------------- compose


def compose_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return data


def test_compose_file_is_valid_and_mounts_exist() -> None:
    tool = require(
        ["docker-compose"],
        "deploy/compose is validated with docker-compose's own schema",
        "apt-get install docker-compose",
    )
    r = subprocess.run(
        [tool, "-f", str(COMPOSE / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    services = compose_file()["services"]
    assert {"gateway-1", "gateway-2", "redis", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            assert (COMPOSE / source).exists(), f"{name} mounts missing {source}"
    # Both gateways run the shared config, which points at the compose Redis.
    gw_cfg = json.loads((COMPOSE / "gateway" / "config.json").read_text())
    cfg = build_config(gw_cfg, env={}, known_types=DefaultBackendRegistry().types())
    assert cfg.rate_limit is not None and cfg.rate_limit.redis_url == "redis://redis:6379/0"
    for gw in ("gateway-1", "gateway-2"):
        svc = services[gw]
        assert svc["environment"]["GATEWAY_CONFIG"] == "/etc/chromagent/config.json"
        assert svc["ports"][0].endswith(f":{cfg.port}")
        grace = int(re.fullmatch(r"(\d+)s", svc["stop_grace_period"]).group(1))  # type: ignore[union-attr]
        assert cfg.shutdown_timeout_ms / 1000 < grace


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path → host path of a compose service's bind mounts."""
    out = {}
    for vol in service.get("volumes", []):
        source, target = vol.split(":")[:2]
        out[target] = (COMPOSE / source).resolve()
    return out


def test_compose_prometheus_and_grafana_see_the_shipped_files(tmp_path: Path) -> None:
    services = compose_file()["services"]
    prom = mounts(services["prometheus"])
    config = yaml.safe_load(prom["/etc/prometheus/prometheus.yml"].read_text())
    # The rule files as Prometheus in the container sees them: the shipped alerts.
    rule_files = [prom[f] for f in config["rule_files"]]
    assert rule_files == [(ROOT / "deploy" / "prometheus" / "alerts.yml").resolve()]
    assert [j["job_name"] for j in config["scrape_configs"]] == ["chromagent"]
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["gateway-1:3000", "gateway-2:3000"]
    host_config = dict(config, rule_files=[str(p) for p in rule_files])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(host_config))
    promtool = prometheus_binary("promtool")
    r = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr

    graf = mounts(services["grafana"])
    providers = yaml.safe_load(
        (graf["/etc/grafana/provisioning"] / "dashboards" / "chromagent.yml").read_text()
    )["providers"]
    folder = providers[0]["options"]["path"]
    dashboards = {t: p for t, p in graf.items() if t.startswith(folder + "/")}
    assert list(dashboards.values()) == [
        (ROOT / "deploy" / "grafana" / "chromagent-dashboard.json").resolve()
    ]
    sources = yaml.safe_load(
        (graf["/etc/grafana/provisioning"] / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert [(s["type"], s["url"], s["isDefault"]) for s in sources] == [
        ("prometheus", "http://prometheus:9090", True)
    ]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in dashboards
