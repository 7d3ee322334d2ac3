"""A real Prometheus server (the Debian package's binary, in its own namespace on the lab's switch, its own
temp data dir, 1 s scrape/evaluation) scrapes three routers' /metrics with monitoring/'s alert rules loaded
(their `for:` shortened); killing h3's router fires WeaveRouterDown for h3 and WeavePeerUnreachable on h1
and h2. Every weave_* metric the Grafana dashboard queries is among the series Prometheus scraped (those that
only appear with traffic excepted: none of the lab's containers sends any)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from weavenet.datapath import lane as clane

from .conftest import wait_for
from .helpers import full_mesh, launch_chain, report

MONITORING = Path(__file__).resolve().parents[3] / "monitoring"
PORT = 6782
# The API (with its own /metrics) listens on 127.0.0.1 only; a scraper on another machine reads the listener that
# --metrics-addr opens (GET /metrics and nothing else), as with Weave's --metrics-addr.
TRAFFIC_ONLY = {"weave_bytes_total", "weave_frames_total"}   # counters with a sample per peer once frames flow


def prom_get(ns: str, port: int, path: str) -> dict:
    out = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def firing(ns: str, port: int) -> set[tuple[str, str, str]]:
    alerts = (prom_get(ns, port, "/api/v1/alerts").get("data") or {}).get("alerts") or []
    return {(a["labels"]["alertname"], a["labels"].get("instance", ""), a["labels"].get("nickname", ""))
            for a in alerts if a["state"] == "firing"}


def start_prometheus(ns: str, port: int, targets: list[str], tmp: Path) -> subprocess.Popen:
    """Prometheus in `ns`: 1 s scrape and evaluation, monitoring/'s rules with `for:` cut to 2 s, data in `tmp`."""
    rules = tmp / "rules.yml"
    rules.write_text(re.sub(r"\bfor: \S+", "for: 2s", (MONITORING / "prometheus" / "weavenet-rules.yml").read_text()))
    cfg = tmp / "prometheus.yml"
    cfg.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}\n"
                   f"rule_files: [{rules}]\n"
                   "scrape_configs:\n  - job_name: weavenet\n"
                   f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n")
    with open(tmp / "prometheus.log", "w") as log:
        return subprocess.Popen(["ip", "netns", "exec", ns, "prometheus", f"--config.file={cfg}",
                                 f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="scripts/bootstrap installs prometheus")
def test_prometheus_scrapes_three_routers_and_fires_router_down_and_peer_unreachable(lab_factory, tmp_path):
    lab = lab_factory(3)
    routers = list(lab.hosts)
    h1, h2, h3 = routers
    names = launch_chain(routers, "--metrics-addr", f"0.0.0.0:{PORT}")
    wait_for(lambda: full_mesh(routers, names), 20, what="full mesh")
    procs: list[subprocess.Popen] = []
    try:
        mon = lab.add_host(len(routers) + 1)   # Prometheus' own namespace on the switch
        port = 19090
        procs.append(start_prometheus(mon.netns, port, [f"{h.ip}:{PORT}" for h in routers], tmp_path))

        def all_up() -> bool:
            res = (prom_get(mon.netns, port, "/api/v1/query?query=up").get("data") or {}).get("result") or []
            return len(res) == 3 and all(r["value"][1] == "1" for r in res)
        wait_for(all_up, 60, interval=0.5, what="prometheus scraping the three routers")
        wait_for(lambda: prom_get(mon.netns, port, "/api/v1/query?query=weave_peer_rtt_seconds")["data"]["result"],
                 30, interval=0.5, what="per-peer RTT scraped")
        assert firing(mon.netns, port) == set(), "alerts firing on a healthy mesh"
        lane = prom_get(mon.netns, port, "/api/v1/query?query=weave_sleeve_lane")["data"]["result"]
        assert sorted(r["value"][1] for r in lane) == ["1" if clane.AVAILABLE else "0"] * 3, lane

        # Every weave_* name the dashboard queries is a series Prometheus holds.
        held = set(prom_get(mon.netns, port, "/api/v1/label/__name__/values")["data"])
        dash = (MONITORING / "grafana" / "weavenet.json").read_text()
        queried = set(re.findall(r"\b(weave_[a-z0-9_]+)\b", dash))
        assert not sorted(queried - held - TRAFFIC_ONLY), "dashboard metrics not scraped"

        t0 = time.monotonic()
        subprocess.run(["kill", "-KILL", str(h3.router_pid())], check=True)
        want = {("WeaveRouterDown", f"{h3.ip}:{PORT}", "")} | {
            ("WeavePeerUnreachable", f"{h.ip}:{PORT}", "h3") for h in (h1, h2)}
        wait_for(lambda: want <= firing(mon.netns, port), 60, interval=0.5, what="router down / peer unreachable")
        print(f"h3 killed: alerts firing after {time.monotonic() - t0:.1f}s: {sorted(firing(mon.netns, port))}")
        assert {a for a in firing(mon.netns, port) if a[0] == "WeavePeerUnreachable"} <= want
        assert report(h1)["name"] == names[0]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
