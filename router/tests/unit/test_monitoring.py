"""monitoring/: every metric the Grafana dashboard and the Prometheus rules query exists in a real router's
/metrics (two routers built by build_router, meshed over TCP, one container attached), so a renamed metric
fails here, not on an operator's empty panel or an alert that can never fire."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from weavenet.api.metrics import make_registry, render

from .test_router_wiring import established, free_port, running, until

MONITORING = Path(__file__).resolve().parents[3] / "monitoring"
# Not the router's: Prometheus' own per-target series.
PROMETHEUS_OWN = {"up"}


def _exprs() -> dict[str, list[str]]:
    dash = json.loads((MONITORING / "grafana" / "weavenet.json").read_text())
    panels = [p for p in dash["panels"] if p.get("targets")]
    # The rules file whole (no YAML parser in the router's venv): each alert's expr and any name its text cites.
    rules = (MONITORING / "prometheus" / "weavenet-rules.yml").read_text().split("- alert:")[1:]
    out = {"dashboard": [t["expr"] for p in panels for t in p["targets"]], "rules": rules}
    out["dashboard"] += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return out


def _names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: weave_* words and the few Prometheus series we name."""
    words = set(re.findall(r"\b(weave_[a-z0-9_]+)\b", expr)) | (set(re.findall(r"\b(up)\{", expr)))
    return words


def test_every_metric_the_dashboard_and_the_rules_query_is_served_by_a_real_router(tmp_path):
    async def main() -> str:
        pa, pb = free_port(), free_port()
        async with running(tmp_path, "a", pa) as (a, _), running(tmp_path, "b", pb, (f"127.0.0.1:{pa}",)) as (b, _):
            await until(lambda: established(a, "b") and established(b, "a"))
            await until(lambda: any(r["rtt_ms"] is not None for r in a.report()["router"]["health"]["peers"]))
            await a.attach("web", ["net:default"])
            from weavenet.api.metrics_services import DNS_KINDS
            assert a.dns is not None and set(a.dns.counters) == set(DNS_KINDS)   # one list of DNS counters
            return render(make_registry(a)).decode()

    fams = list(text_string_to_metric_families(asyncio.run(main())))
    # A counter without samples yet (weave_bytes before any traffic) is still declared: its family counts.
    served = {s.name for fam in fams for s in fam.samples} | {f"{f.name}_total" for f in fams if f.type == "counter"}
    exprs = _exprs()
    assert len(exprs["dashboard"]) > 20 and len(exprs["rules"]) >= 6
    for where, items in exprs.items():
        queried = set().union(*map(_names, items))
        missing = sorted(queried - served - PROMETHEUS_OWN)
        assert not missing, f"monitoring {where} queries metrics no router serves: {missing}"
    # the areas the issue names each have a panel/rule behind them
    everything = " ".join(exprs["dashboard"])
    for name in ("weave_mesh_routers", "weave_peer_rtt_seconds", "weave_peer_heartbeat_loss_ratio",
                 "weave_peer_datapath", "weave_peer_failures_total", "weave_bytes_total", "weave_dropped_frames_total",
                 "weave_ipam_addresses", "weave_dns_events_total"):
        assert name in everything, name


def test_names_are_found_in_expressions():
    assert _names('sum by (kind) (rate(weave_dns_events_total{kind="x"}[5m])) or up{job="w"} == 0') == {
        "weave_dns_events_total", "up"}


def test_ipam_and_dns_figures():
    from weavenet.api.metrics_services import DNS_KINDS, services

    report = {"name": "aa", "ipam": {"consensus": {"state": "achieved"}, "pending": 2, "peers": [
        {"peer": "aa", "addresses": 512, "used": 10}, {"peer": "bb", "addresses": 512, "used": 500}]},
        "dns": {"upstream_failed": 3, "records": [{"name": "web"}]}}
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in services(report) for s in fam.samples}
    assert got[("weave_ipam_ring_ready", ())] == 1 and got[("weave_ipam_pending", ())] == 2
    assert got[("weave_ipam_addresses", (("kind", "used"), ("scope", "mesh")))] == 510
    assert got[("weave_ipam_addresses", (("kind", "owned"), ("scope", "local")))] == 512
    assert got[("weave_dns_events_total", (("kind", "upstream_failed"),))] == 3
    assert sum(1 for k in got if k[0] == "weave_dns_events_total") == len(DNS_KINDS)   # every kind, from zero
    assert got[("weave_dns_records", ())] == 1
    # DNS off (--no-dns): no weave_dns_* at all; no ring yet: ready 0
    got = {s.name: s.value for fam in services({"ipam": {"consensus": {"state": "waiting"}}}) for s in fam.samples}
    assert got["weave_ipam_ring_ready"] == 0 and not any(n.startswith("weave_dns") for n in got)
