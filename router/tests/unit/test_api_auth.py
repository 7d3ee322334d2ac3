"""The local API's edge: the real aiohttp app on 127.0.0.1 (ephemeral port), spoken to with raw HTTP.

The router behind it is a stub recording calls: what matters here is what reaches it and what does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import threading
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from weavenet.api.client import APIError, Client
from weavenet.api.server import MAX_BODY, make_app, make_runner, write_token
from weavenet.weaver.paths import Paths

TOKEN = "t" * 43


class StubRouter:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.config = SimpleNamespace(password="s3cret pw")
        self.workloads = SimpleNamespace(dns_lookup=lambda name: self._call("dns_lookup", name) or [],
                                         dns_add=self._async("dns_add"), dns_remove=self._async("dns_remove"))
        self.attach = self._async("attach")
        self.detach = self._async("detach")

    def _call(self, *what) -> None:
        self.calls.append(what)

    def _async(self, name):
        async def op(*args, **kw):
            self.calls.append((name, *args))
            return {"addresses": []}
        return op

    def report(self) -> dict:
        self._call("report")
        return {"version": "0", "router": {"name": "aa:bb", "nickname": "a", "encryption": False, "peers": [],
                                           "connections": [], "targets": []}}

    def connect(self, peers, replace):
        self._call("connect", peers, replace)
        return peers

    def forget(self, peers):
        self._call("forget", peers)
        return []

    def rmpeer(self, peer):
        self._call("rmpeer", peer)
        return 0

    async def expose(self, cidrs, hide=False):
        self._call("expose", cidrs, hide)
        return {}

    def ps(self):
        self._call("ps")
        return []

    def ipam_status(self):
        self._call("ipam")
        return ""


def served(router: StubRouter):
    """The real app for `router` on 127.0.0.1 (an ephemeral port), in a thread's event loop; yields the port."""
    return served_app(lambda: make_app(router, TOKEN, registry=CollectorRegistry()))


@contextlib.contextmanager
def served_app(make: Callable[[], web.Application]):
    """The app `make()` returns, served on 127.0.0.1 (an ephemeral port) in a thread's event loop; yields the port."""
    loop = asyncio.new_event_loop()
    box: dict = {}

    async def serve():
        runner = make_runner(make())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"], box["runner"] = site._server.sockets[0].getsockname()[1], runner

    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
        yield box["port"]
    finally:
        if "runner" in box:
            asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.close()


@pytest.fixture
def api():
    """(port, stub router): the app served for the duration of a test."""
    router = StubRouter()
    with served(router) as port:
        yield port, router


def raw(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
        host: str | None = "127.0.0.1") -> tuple[int, dict]:
    """Send one request byte for byte (no library fills in headers); return (status, JSON body)."""
    h = {} if host is None else {"Host": host}
    h.update(headers or {})
    if body is not None:
        h.setdefault("Content-Length", str(len(body)))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    head += "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + (body or b""))
        data = b""
        while (chunk := s.recv(65536)) and not _complete(data := data + chunk):
            pass  # the server may keep reading a body it refused: stop at the end of the response
    status = int(data.split(b" ", 2)[1])
    payload = data.split(b"\r\n\r\n", 1)[1]
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, {"text": payload.decode(errors="replace")}


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return bool(sep) and len(body) >= int(v)
    return False


AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
ENDPOINTS = [("GET", "/report", None), ("GET", "/status", None), ("GET", "/ps", None), ("GET", "/ipam", None),
             ("GET", "/dns-lookup?name=x", None),
             ("POST", "/connect", {"peers": ["192.0.2.1"]}), ("POST", "/forget", {"peers": ["192.0.2.1"]}),
             ("POST", "/attach", {"target": "pid:1", "cidrs": []}), ("POST", "/detach", {"target": "c"}),
             ("POST", "/expose", {"cidrs": ["10.0.0.1/24"]}), ("POST", "/hide", {"cidrs": ["10.0.0.1/24"]}),
             ("POST", "/rmpeer", {"peer": "aa:bb"}), ("POST", "/dns-add", {"target": "c", "ips": []}),
             ("POST", "/dns-remove", {"target": "c"}), ("POST", "/password/check", {"password": "x"})]


def _send(port, method, path, body, headers):
    data = None if body is None else json.dumps(body).encode()
    return raw(port, method, path, data, {**(JSON if data is not None else {}), **headers})


@pytest.mark.parametrize("method, path, body", ENDPOINTS)
def test_no_token_or_wrong_token_is_401_and_reaches_nothing(api, method, path, body):
    port, router = api
    for headers in ({}, {"Authorization": "Bearer " + "x" * 43}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": "Bearer"}):
        status, err = _send(port, method, path, body, headers)
        assert status == 401 and "token" in err["error"], (headers, err)
    assert router.calls == []
    status, _ = _send(port, method, path, body, AUTH)
    assert status == 200 and (router.calls or path == "/password/check")


def test_text_plain_post_is_415_even_with_the_token(api):
    """A page can POST text/plain cross-site without a preflight: such a body never reaches a handler."""
    port, router = api
    body = json.dumps({"target": "pid:1", "cidrs": ["10.0.0.1/24"]}).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = dict(AUTH, **({"Content-Type": ctype} if ctype else {}))
        status, err = raw(port, "POST", "/attach", body, headers)
        assert status == 415 and "application/json" in err["error"]
    status, _ = raw(port, "POST", "/attach", body, dict(AUTH, **{"Content-Type": "application/json; charset=utf-8"}))
    assert status == 200 and router.calls == [("attach", "pid:1", ["10.0.0.1/24"])]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:6784", "127.0.0.1.evil.example", "10.0.0.1:6784",
                                  "127.0.0.2", "localhost.", "[::2]:6784", "127.0.0.1:6784 x", None])
def test_non_loopback_host_header_is_refused(api, host):
    """DNS rebinding: the page's own name in Host. Also on /metrics, which needs no token."""
    port, router = api
    for path in ("/report", "/metrics"):
        status, err = raw(port, "GET", path, headers=AUTH, host=host)
        if host is None:  # aiohttp's parser refuses HTTP/1.1 without Host before we see it
            assert status in (400, 403)
        else:
            assert status == 403 and "Host" in err["error"]
    assert router.calls == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:6784", "localhost", "LOCALHOST:1", "[::1]", "[::1]:6784"])
def test_loopback_host_headers_are_accepted(api, host):
    port, _ = api
    assert raw(port, "GET", "/report", headers=AUTH, host=host)[0] == 200


def test_token_header_with_bytes_that_are_not_utf8_is_401(api):
    port, router = api
    for value in (b"Bearer \xff\xfe", b"Bearer \xe9t\xe9", "Bearer \u20ac".encode()):
        head = b"GET /report HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + value + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head)
            assert s.recv(65536).split(b" ", 2)[1] == b"401"
    assert router.calls == []


def test_malformed_http_is_one_log_line_without_traceback(api, caplog):
    """aiohttp's own parser errors (here: a header without a colon, HTTP/1.1 without Host) are one warning."""
    port, router = api
    for head in (b"GET /report HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
                 b"GET /report HTTP/1.1\r\nConnection: close\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head)
            assert s.recv(65536).split(b" ", 2)[1] == b"400"
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "weavenet.api"))]
    assert len(records) == 2 and router.calls == []
    assert all(r.exc_info is None and r.levelname == "WARNING" and "\n" not in r.getMessage() for r in records)


def test_any_origin_header_is_refused(api):
    port, router = api
    for origin in ("https://evil.example", "null", "http://127.0.0.1:6784", ""):
        status, err = _send(port, "POST", "/connect", {"peers": ["192.0.2.1"]}, dict(AUTH, Origin=origin))
        assert status == 403 and "Origin" in err["error"]
    assert router.calls == []


def test_no_cors_headers_even_on_preflight(api):
    port, _ = api
    head = ("OPTIONS /connect HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\n"
            "Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode())
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 403") and b"access-control" not in data.lower()


def test_oversize_body_is_413(api):
    port, router = api
    big = json.dumps({"peers": ["p" * 1000] * (MAX_BODY // 1000 + 1)}).encode()
    status, err = raw(port, "POST", "/connect", big, dict(AUTH, **JSON))
    assert status == 413 and "exceeded" in err["error"]
    # A lying Content-Length is refused before any body is read.
    status, _ = raw(port, "POST", "/connect", b"{}", dict(AUTH, **JSON, **{"Content-Length": str(10**9)}))
    assert status == 413 and router.calls == []


@pytest.mark.parametrize("body, says", [
    (b"not json", "must be JSON"),
    (b"[1, 2]", "JSON object"),
    (b"[" * 30000 + b"]" * 30000, "must be JSON"),   # deeper than the parser's recursion limit
    (b"\xff\xfe{", "must be JSON"),
    (b'{"peers": "192.0.2.1"}', "'peers' must be a list"),
    (b'{"peers": [1]}', "'peers' must be a list"),
    (b'{"peers": [""]}', "'peers' must be a list"),
    (b'{"peers": ["a"], "replace": "yes"}', "'replace' must be true or false"),
    (b'{"peers": ["a"], "evil": 1}', "unknown field 'evil'"),
    (json.dumps({"peers": ["a"] * 1025}).encode(), "at most 1024"),
])
def test_bad_fields_are_one_line_400(api, body, says):
    port, router = api
    status, err = raw(port, "POST", "/connect", body, dict(AUTH, **JSON))
    assert status == 400 and says in err["error"] and "\n" not in err["error"], err
    assert router.calls == []


@pytest.mark.parametrize("path, body, says", [
    ("/attach", {"target": 1}, "'target' must be a non-empty string"),
    ("/attach", {"cidrs": []}, "'target' must be a non-empty string"),
    ("/attach", {"target": "x" * 1025}, "'target'"),
    ("/rmpeer", {"peer": ["aa"]}, "'peer'"),
    ("/dns-add", {"target": "c", "fqdn": 5}, "'fqdn'"),
    ("/password/check", {"password": None}, "'password'"),
    ("/expose", {"cidrs": {"a": 1}}, "'cidrs'"),
])
def test_field_types_checked_on_every_endpoint(api, path, body, says):
    port, router = api
    status, err = _send(port, "POST", path, body, AUTH)
    assert status == 400 and says in err["error"]
    assert router.calls == []


def test_password_check_compares_the_running_password(api):
    port, router = api
    assert _send(port, "POST", "/password/check", {"password": "s3cret pw"}, AUTH) == (200, {"matches": True})
    assert _send(port, "POST", "/password/check", {"password": "s3cret"}, AUTH) == (200, {"matches": False})
    router.config.password = None  # unencrypted router: nothing matches
    assert _send(port, "POST", "/password/check", {"password": "s3cret pw"}, AUTH) == (200, {"matches": False})


def test_metrics_is_open_without_token_but_read_only(api):
    port, _ = api
    assert raw(port, "GET", "/metrics")[0] == 200
    assert raw(port, "POST", "/metrics", b"{}", JSON)[0] == 401   # only GET is open (then 405 with the token)
    assert raw(port, "POST", "/metrics", b"{}", dict(AUTH, **JSON))[0] == 405


def test_unknown_path_is_a_json_404_only_with_the_token(api):
    port, _ = api
    assert raw(port, "GET", "/nope")[0] == 401
    status, err = raw(port, "GET", "/nope", headers=AUTH)
    assert status == 404 and "error" in err


def test_dns_lookup_name_is_bounded(api):
    port, router = api
    status, _ = raw(port, "GET", "/dns-lookup?name=" + "a" * 256, headers=AUTH)
    assert status == 400 and router.calls == []


def test_token_file_is_0600_and_replaced_atomically(tmp_path):
    paths = Paths(tmp_path / "run", tmp_path / "data")
    paths.rundir.mkdir()
    old = os.umask(0)
    try:
        t1 = write_token(paths.api_token)
        t2 = write_token(paths.api_token)
    finally:
        os.umask(old)
    assert stat.S_IMODE(paths.api_token.stat().st_mode) == 0o600
    assert paths.api_token.read_text() == f"{t2}\n" and t1 != t2 and len(t2) >= 43
    assert [p.name for p in paths.rundir.iterdir()] == [paths.api_token.name]  # no temporary file left


def test_client_sends_the_token_over_the_unix_socket(tmp_path):
    """The CLI's client, against the same app on a unix socket: the token file is what lets it in."""
    paths = Paths(tmp_path, tmp_path)
    router = StubRouter()

    async def main():
        token = write_token(paths.api_token)
        runner = make_runner(make_app(router, token, registry=CollectorRegistry()))
        await runner.setup()
        await web.UnixSite(runner, str(paths.socket)).start()
        try:
            ok = await asyncio.to_thread(Client.for_paths(paths).report)
            paths.api_token.write_text("wrong-token\n")
            with pytest.raises(APIError, match="token") as wrong:
                await asyncio.to_thread(Client.for_paths(paths).report)
            paths.api_token.unlink()
            with pytest.raises(APIError, match=r"cannot read API token .* are you root\?"):
                await asyncio.to_thread(Client.for_paths(paths).report)
            return ok, wrong.value.status
        finally:
            await runner.cleanup()

    ok, status = asyncio.run(main())
    assert ok["router"]["name"] == "aa:bb" and status == 401
    assert router.calls == [("report",)]
