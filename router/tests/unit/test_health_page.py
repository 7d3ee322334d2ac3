"""The live page's way in, on the real API app (raw HTTP): a one-time ticket for the token holder, a session
cookie (HttpOnly, SameSite=Strict) for the browser, GET only, and the API's edge rules (loopback Host, no
Origin) still in force. Also the page's data and picture, and the weave_peer_* metrics."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from weavenet.api import page
from weavenet.api.metrics import peer_health

from .test_api_auth import TOKEN, StubRouter, raw, served
from .test_topology_render import report as mesh_report

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


class PageRouter(StubRouter):
    def __init__(self, api_port: int = 6784) -> None:
        super().__init__()
        self.config.api_port = api_port

    def report(self) -> dict:
        r = mesh_report("broken")
        r["router"]["health"]["peers"] = [{
            "name": "02:00:00:00:00:02", "nickname": "h2", "state": "connected", "state_for_s": 5.0,
            "address": "10.0.0.2:6783", "datapath": "fastdp", "via": "", "encrypted": False, "mtu": 1376,
            "rtt_ms": 0.5, "rtt_max_ms": 1.5, "heartbeat_loss": 0.0, "reconnects": 2, "fallbacks": 1,
            "last_failure": "EOF", "last_failure_kind": "closed", "last_failure_s_ago": 9.0,
            "failures": {"closed": 3}, "healthy": True, "problems": []}]
        return r


def ticket(port: int) -> str:
    status, body = raw(port, "POST", "/ui/ticket", b"{}", JSON)
    assert status == 200, body
    url = urlparse(body["url"])
    assert (url.hostname, url.path) == ("127.0.0.1", "/ui/login")
    return url.query


def login(port: int, query: str) -> tuple[int, str]:
    """(status, the Set-Cookie header) of opening a login URL."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET /ui/login?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    cookie = next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                   if line.lower().startswith("set-cookie:")), "")
    return int(head.split(" ", 2)[1]), cookie


def session(port: int) -> dict:
    status, cookie = login(port, ticket(port))
    assert status == 303, status
    return {"Cookie": cookie.split(";", 1)[0]}


def test_a_ticket_needs_the_token_and_buys_one_strict_httponly_session():
    with served(PageRouter()) as port:
        assert raw(port, "POST", "/ui/ticket", b"{}", {"Content-Type": "application/json"})[0] == 401
        query = ticket(port)
        status, cookie = login(port, query)
        assert status == 303
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
        assert {"httponly", "path", "samesite"} <= attrs and "SameSite=Strict" in cookie and "Path=/ui" in cookie
        assert login(port, query)[0] == 401          # spent
        assert login(port, "ticket=" + "A" * 43)[0] == 401
        assert login(port, "")[0] == 401


def test_the_page_opens_only_with_a_session_and_only_for_get():
    with served(PageRouter()) as port:
        for path in ("/ui/", "/ui/data", "/ui/topology.svg", "/ui/page.js"):
            assert raw(port, "GET", path)[0] == 401
            assert raw(port, "GET", path, headers=AUTH)[0] == 401    # the token is not a page session
            assert raw(port, "GET", path, headers={"Cookie": "weave_ui=forged"})[0] == 401
        cookie = session(port)
        status, body = raw(port, "GET", "/ui/", headers=cookie)
        assert status == 200 and "<title>weavenet</title>" in body["text"]
        assert raw(port, "GET", "/ui/page.js", headers=cookie)[0] == 200
        assert raw(port, "GET", "/ui/nothing.js", headers=cookie)[0] == 404
        assert raw(port, "POST", "/ui/data", b"{}", {**cookie, "Content-Type": "application/json"})[0] == 405
        # The edge still applies: a cross-site request (Origin) or a rebinding name (Host) is refused.
        assert raw(port, "GET", "/ui/data", headers={**cookie, "Origin": "http://evil.example"})[0] == 403
        assert raw(port, "GET", "/ui/data", headers=cookie, host="evil.example:6784")[0] == 403
        # The session opens the page only, not the API.
        assert raw(port, "GET", "/report", headers=cookie)[0] == 401


def test_page_data_and_picture_show_every_router_and_the_broken_link():
    with served(PageRouter()) as port:
        cookie = session(port)
        status, d = raw(port, "GET", "/ui/data", headers=cookie)
        assert status == 200
        assert {n["nickname"] for n in d["nodes"]} == {"h1", "h2", "h3"}
        (bad,) = [lk for lk in d["links"] if lk["state"] != "ok"]
        assert {bad["a_nick"], bad["b_nick"]} == {"h2", "h3"} and bad["state"] == "broken"
        assert d["subnets"] == ["10.32.0.0/12"] and d["peers"][0]["reconnects"] == 2
        status, svg = raw(port, "GET", "/ui/topology.svg", headers=cookie)
        assert status == 200 and all(f">{n}<" in svg["text"] for n in ("h1", "h2", "h3"))


def test_no_ticket_without_a_tcp_port():
    with served(PageRouter(api_port=0)) as port:
        status, body = raw(port, "POST", "/ui/ticket", b"{}", JSON)
        assert status == 400 and "api_port 0" in body["error"]


def test_tickets_and_sessions_are_bounded_and_expire():
    now = [0.0]
    auth = page.UiAuth(clock=lambda: now[0])
    tickets = [auth.new_ticket() for _ in range(page.MAX_TICKETS * 4)]
    assert auth.redeem(tickets[0]) is None and auth.redeem(tickets[-1]) is not None   # oldest dropped
    t = auth.new_ticket()
    now[0] += page.TICKET_TTL + 1
    assert auth.redeem(t) is None
    s = auth.redeem(auth.new_ticket())
    assert s is not None and auth.valid(s)
    now[0] += page.SESSION_TTL + 1
    assert not auth.valid(s)


def test_peer_metrics_have_stable_names_and_labels():
    from prometheus_client import CollectorRegistry, generate_latest

    class One:
        def collect(self):
            return peer_health(PageRouter().report()["router"])
    reg = CollectorRegistry()
    reg.register(One())
    text = generate_latest(reg).decode()
    for name in ("weave_peer_connected", "weave_peer_reachable", "weave_peer_healthy", "weave_peer_rtt_seconds",
                 "weave_peer_heartbeat_loss_ratio", "weave_peer_datapath", "weave_peer_encrypted",
                 "weave_peer_mtu_bytes", "weave_peer_state_seconds", "weave_peer_reconnects_total",
                 "weave_peer_datapath_fallbacks_total", "weave_peer_failures_total", "weave_mesh_links",
                 "weave_mesh_routers", "weave_connection_failures_unattributed_total",
                 "weave_health_gossip_refused_total"):
        assert re.search(rf"^{name}[{{ ]", text, re.M), name
    assert 'weave_peer_rtt_seconds{nickname="h2",peer="02:00:00:00:00:02",stat="max"} 0.0015' in text
    assert 'weave_peer_failures_total{kind="closed",nickname="h2",peer="02:00:00:00:00:02"} 3.0' in text
    assert 'weave_mesh_links{state="broken"} 1.0' in text
