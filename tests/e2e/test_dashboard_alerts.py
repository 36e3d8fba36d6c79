"""The shipped Grafana dashboard and Prometheus alert rules work against a real gateway: a
real Prometheus scrapes the gateway every second while the traffic mix (successes, streams,
every cause of error, a cooling backend) runs, then every dashboard panel expression (with
the dashboard's variables substituted) and every alert expression is evaluated through the
Prometheus HTTP API and must return data; ``promtool check rules`` must accept the rules,
Prometheus must have evaluated every rule without error, and ``promtool test rules`` shows
the alerts firing at their thresholds on synthetic series."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.gateway import run_gateway
from tests.support.prometheus import Prometheus, prometheus_binary
from tests.support.traffic import drive, gateway_config, start_upstream

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "chromagent-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Grafana's variables, as a user looking at all backends over a short window sees them.
VARIABLES = {"$__rate_interval": "1m", "$backend": ".*", "${backend}": ".*"}
# An alert is "<query> <comparison> <threshold>": the query must return data under test traffic
# (the threshold decides only whether it fires).
THRESHOLD = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*[0-9.]+\s*$")


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                expr = t["expr"]
                for var, val in VARIABLES.items():
                    expr = expr.replace(var, val)
                assert "$" not in expr, f"panel {p['title']!r}: unsubstituted variable in {expr}"
                out.append((p["title"], expr))

    walk(dashboard["panels"])
    return out


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for g in groups for rule in g["rules"]]


def test_promtool_accepts_the_rules() -> None:
    promtool = prometheus_binary("promtool")
    r = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in r.stdout


def test_alerts_fire_at_their_thresholds() -> None:
    """deploy/prometheus/alerts_test.yml: synthetic series, each alert fires (or not) when due."""
    promtool = prometheus_binary("promtool")
    tests = ALERTS.with_name("alerts_test.yml")
    r = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    tested = {t["alertname"] for case in yaml.safe_load(tests.read_text())["tests"] for t in case["alert_rule_test"]}  # fmt: skip
    assert len(tested) >= 6 and tested <= {rule["alert"] for rule in alert_rules()}


def test_dashboard_covers_what_operators_watch() -> None:
    dash = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for topic in (
        "requests / s",
        "errors / s by cause",
        "time to first token",
        "tokens / s by type and backend",
        "cache hit ratio by backend",
        "cooling down",
        "gateway overhead",
        "in flight",
    ):
        assert topic in titles, f"no panel about {topic!r}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    names = {v["name"] for v in dash["templating"]["list"]}
    assert names == {"datasource", "backend"}


async def test_every_panel_and_alert_returns_data(tmp_path: Path) -> None:
    up = await start_upstream()
    try:
        async with run_gateway(gateway_config(up)) as gw:
            target = gw.url.removeprefix("http://")
            prom = await Prometheus(tmp_path / "prom", [target], [ALERTS]).start()
            try:
                await run_checks(prom, gw.url)
            finally:
                await prom.stop()
    finally:
        await up.close()


async def scrapes(prom: Prometheus) -> int:
    got = await prom.query('count_over_time(up{job="chromagent"}[1m])')
    return int(float(got[0]["value"][1])) if got else 0


async def run_checks(prom: Prometheus, url: str) -> None:
    # Traffic across several scrapes, so rates and quantiles have two samples or more.
    start = await scrapes(prom)
    for _ in range(200):
        sent = await drive(url)
        assert ("gpt", 200) in sent and ("claude", 200) in sent
        if await scrapes(prom) >= start + 4:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("prometheus did not scrape the gateway 4 times")
    targets = await prom.api("targets")
    assert [t["health"] for t in targets["activeTargets"]] == ["up"]

    dash = json.loads(DASHBOARD.read_text())
    empty = [(title, e) for title, e in panel_exprs(dash) if not await prom.query(e)]
    assert not empty, f"dashboard panels without data: {empty}"
    for var in dash["templating"]["list"]:
        m = re.fullmatch(r"label_values\((\w+), (\w+)\)", var.get("definition", ""))
        if m:
            values = await prom.api(f"label/{m.group(2)}/values", **{"match[]": m.group(1)})
            assert set(values) >= {"oa", "anth", "gem"}, var["name"]

    rules = alert_rules()
    for rule in rules:
        expr = rule["expr"]
        await prom.query(expr)  # the whole expression is valid PromQL
        query = THRESHOLD.sub("", expr)
        assert query != expr, f"{rule['alert']}: no threshold at the end of {expr!r}"
        assert await prom.query(query), f"{rule['alert']}: {query!r} returned no data"
    # Prometheus evaluated every loaded rule without error.
    for _ in range(100):
        loaded = [r for g in (await prom.api("rules"))["groups"] for r in g["rules"]]
        if len(loaded) == len(rules) and all(r.get("lastEvaluation", "").startswith("2") and not r["lastEvaluation"].startswith("0001") for r in loaded):  # fmt: skip
            break
        await asyncio.sleep(0.1)
    assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in rules)
    assert [r["name"] for r in loaded if r["health"] != "ok"] == []
    # The backend that answered 429 with Retry-After and the unreachable one (failureThreshold
    # connect errors in a row) are cooling down: their alerts are pending, nobody else's.
    pending = {
        a["labels"].get("backend")
        for r in loaded
        if r["name"] == "ChromagentBackendCoolingDown"
        for a in r.get("alerts", [])
    }
    assert pending == {"oa-limited", "dead"}
