"""Prometheus metrics, read at scrape time (nothing to keep in sync), on the loop: the mesh (the loop's own),
the engine's counters and the attachments' snapshot via ``Router.report`` — never a lock another thread
holds across Docker or netlink calls (docs/architecture.md)."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .metrics_services import services

if TYPE_CHECKING:
    from ..weaver.app import Router

STATES = ("established", "pending", "retrying", "failed")
# Every reason the data plane counts (datapath/engine.py, sleeve.py, forward.py, the nft source filter).
DROP_REASONS = ("no_route", "replay", "auth", "too_big", "malformed", "unknown_peer", "wrong_source", "bad_origin",
                "runt", "bad_src_mac", "mac_hijack", "tap_write", "tap_read", "send_error", "internal",
                "filtered_source")


class MeshCollector:
    def __init__(self, router: Router) -> None:
        self.router = router

    def collect(self):
        mesh = self.router.mesh
        report = self.router.report()["router"]
        conns = GaugeMetricFamily("weave_connections", "Connections by state", labels=["state"])
        counts = Counter(c["state"] for c in report["connections"])
        for s in STATES:
            conns.add_metric([s], counts.get(s, 0))
        yield conns
        yield GaugeMetricFamily("weave_peers", "Peers reachable in the mesh (including this one)",
                                value=len(report["peers"]))
        gossip = CounterMetricFamily("weave_gossip_messages", "Topology gossip messages", labels=["direction"])
        gossip.add_metric(["sent"], mesh.counters["gossip_sent"])
        gossip.add_metric(["received"], mesh.counters["gossip_received"])
        yield gossip
        yield CounterMetricFamily("weave_connections_refused", "Connections refused or failed in handshake",
                                  value=mesh.counters["connections_refused"])
        rtt = GaugeMetricFamily("weave_heartbeat_rtt_seconds", "Last heartbeat round-trip time per peer",
                                labels=["peer", "nickname"])
        for c in mesh.conns.values():
            if c.remote is not None and c.rtt is not None:
                rtt.add_metric([c.remote.name, c.remote.nickname], c.rtt)
        yield rtt
        yield from self._mesh_hostile(mesh)
        yield from self._dataplane()
        yield from peer_health(report)
        yield from services(report)   # weave_ipam_*, weave_dns_* (api/metrics_services.py)

    def _mesh_hostile(self, mesh):
        # Label values are names of peers we know (topology or a connection), anything else "unknown":
        # a stream of made-up names cannot grow the label set.
        known = set(mesh.topology.peers) | {c.remote.name for c in mesh.conns.values() if c.remote}
        totals: Counter = Counter({"unknown": 0})
        for peer, n in list(mesh.protocol_errors.items()):
            totals[peer if peer in known else "unknown"] += n
        perr = CounterMetricFamily("weave_protocol_errors", "Protocol violations (connection closed), per peer",
                                   labels=["peer"])
        for peer, n in sorted(totals.items()):
            perr.add_metric([peer], n)
        yield perr
        refused = CounterMetricFamily("weave_mesh_refused", "Inbound connections closed before a handshake, "
                                      "gossip entries skipped, internal errors", labels=["reason"])
        for reason in ("preauth_refused", "preauth_evicted", "backoff_refused", "rate_refused", "internal_errors"):
            refused.add_metric([reason], mesh.counters.get(reason, 0))
        refused.add_metric(["topology_full"], mesh.topology.refused["full"])
        refused.add_metric(["entry_ahead"], mesh.topology.refused["ahead"])
        yield refused

    def _dataplane(self):
        dp = self.router.dataplane
        eng = dp.engine
        frames = CounterMetricFamily("weave_frames", "Frames forwarded", labels=["peer", "datapath", "direction"])
        nbytes = CounterMetricFamily("weave_bytes", "Bytes forwarded (sleeve: UDP payload)",
                                     labels=["peer", "datapath", "direction"])
        for (peer, direction), n in list(eng.frames.items()):
            frames.add_metric([peer, "sleeve", direction], n)
        for (peer, direction), n in list(eng.bytes.items()):
            nbytes.add_metric([peer, "sleeve", direction], n)
        # The kernel does not count VXLAN traffic per remote: the device's totals, as peer="all".
        for direction, (pk, by) in dp.fastdp_totals().items():
            frames.add_metric(["all", "fastdp", direction], pk)
            nbytes.add_metric(["all", "fastdp", direction], by)
        yield frames
        yield nbytes
        drops = CounterMetricFamily("weave_dropped_frames", "Frames or datagrams dropped", labels=["reason"])
        seen = dp.drop_counts()
        for reason in DROP_REASONS:  # always present, so a rate() over them starts at zero
            drops.add_metric([reason], seen.pop(reason, 0))
        for reason, n in sorted(seen.items()):
            drops.add_metric([reason], n)
        yield drops
        mt = dp.macs
        yield GaugeMetricFamily("weave_mac_table_entries", "Entries in the sleeve's MAC table", value=len(mt))
        yield CounterMetricFamily("weave_mac_table_evictions", "MAC table entries evicted at the size cap",
                                  value=mt.evictions)
        yield GaugeMetricFamily("weave_datapath_healthy", "1 when every datapath thread runs",
                                value=1 if dp.health(time.monotonic())[0] == "healthy" else 0)
        yield CounterMetricFamily("weave_datapath_thread_restarts", "Datapath threads restarted after dying",
                                  value=sum(eng.restarts.values()))
        yield GaugeMetricFamily("weave_sleeve_lane", "1 when the sleeve runs with its C lane (0: Python only)",
                                value=1 if eng.lane else 0)
        lane = CounterMetricFamily("weave_sleeve_lane_frames", "Sleeve frames the C lane carried on its own "
                                   "(the rest of weave_frames_total{datapath=\"sleeve\"} went through the engine)",
                                   labels=["direction"])
        for direction, n in zip(("tx", "rx"), eng.lane_fast(), strict=True):
            lane.add_metric([direction], n)
        yield lane


def peer_health(report: dict):
    """weave_peer_* (labels peer, nickname): this router's measurements of each peer (health/tracker.py),
    and weave_mesh_links: every link of the mesh by state, from the gossiped summaries (health/view.py)."""
    from ..health.tracker import FAILURE_KINDS
    from ..health.view import build

    rows = (report.get("health") or {}).get("peers") or []
    L = ["peer", "nickname"]

    def fam(kind, name, doc, labels=L):
        return (GaugeMetricFamily if kind == "g" else CounterMetricFamily)(name, doc, labels=labels)
    up = fam("g", "weave_peer_connected", "1 while this router has a live connection to the peer")
    reach = fam("g", "weave_peer_reachable", "1 while the peer is reachable (directly or relayed)")
    healthy = fam("g", "weave_peer_healthy", "1 when nothing is wrong with the peer (see weave status peers)")
    rtt = fam("g", "weave_peer_rtt_seconds", "Heartbeat round-trip time over the last minute",
              labels=[*L, "stat"])
    loss = fam("g", "weave_peer_heartbeat_loss_ratio", "Heartbeats late or missing over the last minute")
    dpath = fam("g", "weave_peer_datapath", "1 for the path frames to the peer take now",
                labels=[*L, "datapath"])
    enc = fam("g", "weave_peer_encrypted", "1 when the connection to the peer is encrypted")
    mtu = fam("g", "weave_peer_mtu_bytes", "Overlay MTU towards the peer")
    since = fam("g", "weave_peer_state_seconds", "Seconds the peer has been in its current state",
                labels=[*L, "state"])
    recon = fam("c", "weave_peer_reconnects", "Connections to the peer that came up again after the first")
    fallb = fam("c", "weave_peer_datapath_fallbacks", "Times the fast datapath to the peer fell back to sleeve")
    fails = fam("c", "weave_peer_failures", "Connections to the peer that failed or ended, by kind",
                labels=[*L, "kind"])
    for h in rows:
        lv = [h["name"], h.get("nickname") or ""]
        up.add_metric(lv, 1 if h["state"] == "connected" else 0)
        reach.add_metric(lv, 1 if h["state"] in ("connected", "relayed") else 0)
        healthy.add_metric(lv, 1 if h["healthy"] else 0)
        if h.get("rtt_ms") is not None:
            rtt.add_metric([*lv, "median"], h["rtt_ms"] / 1000)
            rtt.add_metric([*lv, "max"], h["rtt_max_ms"] / 1000)
        if h.get("heartbeat_loss") is not None:
            loss.add_metric(lv, h["heartbeat_loss"])
        for dp in ("fastdp", "sleeve", "relayed", "none"):
            dpath.add_metric([*lv, dp], 1 if h["datapath"] == dp else 0)
        if h.get("encrypted") is not None:
            enc.add_metric(lv, 1 if h["encrypted"] else 0)
        if h.get("mtu"):
            mtu.add_metric(lv, h["mtu"])
        since.add_metric([*lv, h["state"]], h["state_for_s"])
        recon.add_metric(lv, h["reconnects"])
        fallb.add_metric(lv, h["fallbacks"])
        got = h.get("failures") or {}
        for kind in FAILURE_KINDS:   # always present: a rate() over them starts at zero
            fails.add_metric([*lv, kind], got.get(kind, 0))
    yield from (up, reach, healthy, rtt, loss, dpath, enc, mtu, since, recon, fallb, fails)
    health = report.get("health") or {}
    unattr = CounterMetricFamily("weave_connection_failures_unattributed", "Inbound connections that failed "
                                 "before saying which peer they are, by kind", labels=["kind"])
    for kind in FAILURE_KINDS:
        unattr.add_metric([kind], (health.get("unattributed_failures") or {}).get(kind, 0))
    yield unattr
    refused = CounterMetricFamily("weave_health_gossip_refused", "Health summaries refused (malformed, unknown "
                                  "origin, table full)", labels=["reason"])
    for reason in ("malformed", "unknown_origin", "full"):
        refused.add_metric([reason], (health.get("refused") or {}).get(reason, 0))
    yield refused
    if "name" in report:
        links = GaugeMetricFamily("weave_mesh_links", "Links of the whole mesh (gossiped summaries) by state",
                                  labels=["state"])
        view = build({"router": report})
        for state in ("ok", "unhealthy", "broken"):
            links.add_metric([state], sum(1 for e in view.edges if e.state == state))
        yield links
        yield GaugeMetricFamily("weave_mesh_routers", "Routers in the mesh view (this one included)",
                                value=len(view.nodes))


def make_registry(router: Router) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(MeshCollector(router))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
