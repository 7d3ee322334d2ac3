"""weave_ipam_* and weave_dns_*: IPAM space and weaveDNS counters for dashboards and alerts
(monitoring/), read from the router's report at scrape time like the rest of api/metrics.py."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# weave_dns_events{kind}: every counter DnsService keeps (weaver/dns_service.py), always present.
DNS_KINDS = ("answered", "forwarded", "upstream_failed", "forward_refused", "bad_queries", "malformed_gossip",
             "truncated", "tcp_answered", "tcp_refused", "tcp_dropped")


def services(report: dict):
    ipam = report.get("ipam") or {}
    peers = ipam.get("peers") or []
    us = report.get("name")
    ready = GaugeMetricFamily("weave_ipam_ring_ready", "1 once this router has an IPAM ring (consensus achieved)",
                              value=1 if (ipam.get("consensus") or {}).get("state") == "achieved" else 0)
    yield ready
    space = GaugeMetricFamily("weave_ipam_addresses", "Addresses of the allocation range: owned by all peers and "
                              "used by all peers (others' from hints), owned and used by this one",
                              labels=["scope", "kind"])
    space.add_metric(["mesh", "owned"], sum(p["addresses"] for p in peers))
    space.add_metric(["mesh", "used"], sum(p["used"] for p in peers))
    ours = [p for p in peers if p["peer"] == us]
    space.add_metric(["local", "owned"], sum(p["addresses"] for p in ours))
    space.add_metric(["local", "used"], sum(p["used"] for p in ours))
    yield space
    yield GaugeMetricFamily("weave_ipam_pending", "Allocations waiting for space or a ring",
                            value=ipam.get("pending", 0))
    dns = report.get("dns")
    if dns is not None:
        ev = CounterMetricFamily("weave_dns_events", "weaveDNS queries and errors by kind", labels=["kind"])
        for kind in DNS_KINDS:
            ev.add_metric([kind], dns.get(kind, 0))
        yield ev
        yield GaugeMetricFamily("weave_dns_records", "Names in this router's weaveDNS store",
                                value=_records(dns.get("records")))


def _records(records) -> int:
    return len(records) if isinstance(records, (list, dict)) else 0
