"""--metrics-addr: a listener for a Prometheus on another host that serves GET /metrics and nothing else."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from weavenet.api.server import make_metrics_app
from weavenet.weaver.config import RouterConfig

from .test_api_auth import AUTH, JSON, raw, served_app


@pytest.fixture
def metrics_port():
    registry = CollectorRegistry()
    Counter("weave_probe_total", "a counter only this test registers", registry=registry).inc()
    with served_app(lambda: make_metrics_app(registry)) as port:
        yield port


def test_metrics_served_to_any_host_name(metrics_port):
    status, body = raw(metrics_port, "GET", "/metrics", host="198.51.100.7:6782")
    assert status == 200 and "weave_probe_total 1.0" in body["text"]


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/report", None), ("GET", "/status", None), ("POST", "/connect", b'{"peers": []}'),
    ("POST", "/metrics", b"{}"), ("GET", "/ui/", None), ("PUT", "/metrics", b"x"),
])
def test_nothing_but_get_metrics_even_with_a_token(metrics_port, method, path, body):
    status, reply = raw(metrics_port, method, path, body, dict(AUTH, **JSON) if body else AUTH, host="198.51.100.7")
    assert status in (404, 405) and isinstance(reply.get("error"), str)


@pytest.mark.parametrize("given,want", [
    ("0.0.0.0:6782", "0.0.0.0:6782"), ("192.0.2.5:9100", "192.0.2.5:9100"), ("[::]:6782", "[::]:6782"),
])
def test_metrics_addr_accepts_ip_and_port(given, want):
    cfg = RouterConfig(metrics_addr=given)
    cfg.validate()
    assert cfg.metrics_addr == want


@pytest.mark.parametrize("bad", ["6782", "host.example:6782", "0.0.0.0", "0.0.0.0:0", "0.0.0.0:70000", ":6782",
                                 "1.2.3.4:x"])
def test_metrics_addr_refuses_anything_else(bad):
    cfg = RouterConfig(metrics_addr=bad)
    with pytest.raises(ValueError, match="--metrics-addr.*IP:PORT"):
        cfg.validate()
