"""Dashboards and alerts only reference metrics that herald's services really export."""

from __future__ import annotations

import json
import re
from importlib import import_module
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

from herald.ops.lag import LagCollector

MONITORING = Path(__file__).resolve().parents[3] / "infra" / "monitoring"
METRIC = re.compile(r"\bherald_[a-z_]+")
SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_created")


def exported() -> set[str]:
    for module in ("senders.metrics", "processors.metrics", "herald.ops.tracking"):
        import_module(module)
    families = [*REGISTRY.collect(), *LagCollector().collect()]
    return {f.name + s for f in families for s in SUFFIXES}


def test_alert_rules_are_well_formed_and_use_real_metrics() -> None:
    rules = [
        r
        for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    ]
    assert {
        "HeraldConsumerLagHigh",
        "HeraldDeadLetters",
        "HeraldProviderErrorRate",
        "HeraldCircuitOpen",
    } <= {r["alert"] for r in rules}
    known = exported()
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert set(METRIC.findall(rule["expr"])) <= known, rule["alert"]


def test_dashboard_panels_use_real_metrics() -> None:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    known = exported()
    for expr in exprs:
        assert set(METRIC.findall(expr)) <= known, expr
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_scrape_config_covers_every_service_port() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert {f"127.0.0.1:{p}" for p in (9401, 9402, 9403, 9404)} <= targets
    assert config["rule_files"] == ["alerts.yml"]
