"""The router's local HTTP API, served on a unix socket (0600) and on 127.0.0.1 only.

Every request is hostile until checked at the edge (`_edge`): any local user, host-network container or
web page in a browser on the host can reach 127.0.0.1. So: no Origin header (browsers send one on
cross-site requests; the CLI never does), a loopback Host header (defeats DNS rebinding), a bearer token
from a 0600 file in WEAVE_RUNDIR on everything but `GET /metrics`, JSON bodies only (a text/plain POST is
a CORS "simple request" a page could send), bodies bounded, and every field type-checked. The read-only
live page (GET /ui/...) takes a session cookie instead of the token, got with a one-time ticket that only a
token holder can ask for (api/page.py); the Host and Origin rules hold for it too.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from . import format as fmt
from . import page
from .metrics import make_registry, render

if TYPE_CHECKING:
    from ..weaver.app import Router

log = logging.getLogger("weavenet.api")
ROUTER_KEY = web.AppKey("router", object)
REGISTRY_KEY = web.AppKey("registry", object)
TOKEN_KEY = web.AppKey("token", str)
UI_KEY = web.AppKey("ui", page.UiAuth)

MAX_BODY = 64 * 1024   # the largest real request (a few hundred peers or CIDRs) is a few KiB
MAX_LIST = 1024        # items in a list field
MAX_STR = 1024         # characters in a string field (or list item)
OPEN_PATHS = frozenset({"/metrics"})  # read-only counters: scraped without the token
_LOOPBACK_HOST = re.compile(r"(?:127\.0\.0\.1|localhost|\[::1\])(?::[0-9]{1,5})?", re.IGNORECASE)


def _router(request: web.Request) -> Router:
    return request.app[ROUTER_KEY]  # type: ignore[return-value]


def _error(status: int, message: str, headers: dict | None = None) -> web.Response:
    lines = message.strip().splitlines()
    return web.json_response({"error": lines[0] if lines else f"HTTP {status}"}, status=status, headers=headers)


def _check_edge(request: web.Request) -> None:
    """Raise the HTTP error for a request that must not reach a handler."""
    if "Origin" in request.headers:
        raise web.HTTPForbidden(text="requests from web pages (with an Origin header) are refused")
    host = request.headers.get("Host", "")
    if not _LOOPBACK_HOST.fullmatch(host):
        raise web.HTTPForbidden(text=f"Host {host[:64]!r} refused: only 127.0.0.1, localhost or [::1]")
    if page.is_ui_get(request):   # the live page: a session cookie instead of the token (see api/page.py)
        page.check(request, request.app[UI_KEY])
    elif not (request.path in OPEN_PATHS and request.method in ("GET", "HEAD")):
        auth = request.headers.get("Authorization", "")
        scheme, _, given = auth.partition(" ")
        want = request.app[TOKEN_KEY]
        given_b = given.strip().encode("utf-8", "backslashreplace")  # header bytes need not be UTF-8
        if scheme.lower() != "bearer" or not hmac.compare_digest(given_b, want.encode()):
            raise web.HTTPUnauthorized(text="missing or wrong API token (Authorization: Bearer, from the "
                                            "router's api-token file)", headers={"WWW-Authenticate": "Bearer"})
    if request.method not in ("GET", "HEAD") or request.body_exists:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="request body must be Content-Type: application/json")
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)


@web.middleware
async def _edge(request: web.Request, handler):
    """The checks above, and every HTTP error (ours or aiohttp's: 404, 405, 413) as one line of JSON."""
    try:
        _check_edge(request)
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k in ("WWW-Authenticate", "Allow")}
        return _error(e.status, e.text or e.reason, headers)


@web.middleware
async def _value_errors(request: web.Request, handler):
    """Bad input raised anywhere below a handler becomes a 400 with a one-line JSON error."""
    try:
        return await handler(request)
    except ValueError as e:
        return _error(400, str(e))
    except (RuntimeError, OSError) as e:  # the kernel, Docker or nft refused: still one line for the CLI
        return _error(500, str(e).strip() or type(e).__name__)
    except web.HTTPException:
        raise
    except Exception as e:  # a bug: the traceback goes to the log, the caller still gets one line
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error ({type(e).__name__}: {e}); see the router log")


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


async def _json_body(request: web.Request, *fields: str) -> dict:
    """The body as a JSON object with no fields but `fields` (bytes: json detects the UTF encoding)."""
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested deeper than the parser goes
        raise _bad("request body must be JSON") from None
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise _bad(f"unknown field {unknown[0][:64]!r} (expected {', '.join(fields)})")
    return body


def _str(body: dict, key: str, required: bool = True) -> str | None:
    v = body.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v or len(v) > MAX_STR:
        raise _bad(f"{key!r} must be a non-empty string of at most {MAX_STR} characters")
    return v


def _bool(body: dict, key: str) -> bool:
    v = body.get(key, False)
    if not isinstance(v, bool):
        raise _bad(f"{key!r} must be true or false")
    return v


def _str_list(body: dict, key: str) -> list[str]:
    v = body.get(key)
    if v is None:
        return []
    if (not isinstance(v, list) or len(v) > MAX_LIST
            or not all(isinstance(x, str) and 0 < len(x) <= MAX_STR for x in v)):
        raise _bad(f"{key!r} must be a list of at most {MAX_LIST} non-empty strings")
    return v


async def get_status(request: web.Request) -> web.Response:
    return web.Response(text=fmt.status_summary(_router(request).report()))


async def get_report(request: web.Request) -> web.Response:
    return web.json_response(_router(request).report())


async def post_connect(request: web.Request) -> web.Response:
    body = await _json_body(request, "peers", "replace")
    router = _router(request)
    peers = _str_list(body, "peers")
    replace = _bool(body, "replace")
    targets = router.connect(peers, replace) if request.path == "/connect" else router.forget(peers)
    return web.json_response({"targets": targets})


async def post_attach(request: web.Request) -> web.Response:
    body = await _json_body(request, "target", "cidrs")
    router = _router(request)
    op = router.attach if request.path == "/attach" else router.detach
    return web.json_response(await op(_str(body, "target"), _str_list(body, "cidrs")))


async def post_expose(request: web.Request) -> web.Response:
    body = await _json_body(request, "cidrs")
    result = await _router(request).expose(_str_list(body, "cidrs"), hide=request.path == "/hide")
    return web.json_response(result)


async def post_rmpeer(request: web.Request) -> web.Response:
    body = await _json_body(request, "peer")
    return web.json_response({"addresses": _router(request).rmpeer(_str(body, "peer"))})


async def post_password_check(request: web.Request) -> web.Response:
    """Whether `password` is the running router's (so Ansible notices a change without the report
    carrying anything crackable offline). Constant-time; the token keeps it from being an oracle."""
    body = await _json_body(request, "password")
    given = _str(body, "password")
    have = _router(request).config.password
    matches = have is not None and hmac.compare_digest(given.encode(), have.encode())
    return web.json_response({"matches": matches})


async def get_ipam(request: web.Request) -> web.Response:
    return web.Response(text=_router(request).ipam_status())


async def post_dns(request: web.Request) -> web.Response:
    body = await _json_body(request, "target", "ips", "fqdn")
    wl = _router(request).workloads
    op = wl.dns_add if request.path == "/dns-add" else wl.dns_remove
    return web.json_response(await op(_str(body, "target"), _str_list(body, "ips"), _str(body, "fqdn", False)))


async def get_dns_lookup(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    if len(name) > 255:
        raise _bad("'name' must be at most 255 characters")
    return web.json_response({"addresses": _router(request).workloads.dns_lookup(name)})


async def get_ps(request: web.Request) -> web.Response:
    return web.json_response({"containers": _router(request).ps()})


async def get_metrics(request: web.Request) -> web.Response:
    body = render(request.app[REGISTRY_KEY])  # type: ignore[arg-type]
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(router: Router, token: str, registry: object | None = None) -> web.Application:
    """The API app; `registry` replaces the router's metrics (tests of the HTTP edge use a stub router)."""
    if len(token) < 32:
        raise ValueError("API token too short")
    app = web.Application(middlewares=[_edge, _value_errors], client_max_size=MAX_BODY)
    app[ROUTER_KEY] = router
    app[TOKEN_KEY] = token
    app[REGISTRY_KEY] = registry if registry is not None else make_registry(router)
    app.router.add_get("/status", get_status)
    app.router.add_get("/report", get_report)
    app.router.add_post("/connect", post_connect)
    app.router.add_post("/forget", post_connect)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/ps", get_ps)
    app.router.add_post("/rmpeer", post_rmpeer)
    app.router.add_post("/password/check", post_password_check)
    app.router.add_get("/ipam", get_ipam)
    app.router.add_post("/dns-add", post_dns)
    app.router.add_post("/dns-remove", post_dns)
    app.router.add_get("/dns-lookup", get_dns_lookup)
    app.router.add_post("/attach", post_attach)
    app.router.add_post("/detach", post_attach)
    app.router.add_post("/expose", post_expose)
    app.router.add_post("/hide", post_expose)
    app[UI_KEY] = page.UiAuth()
    page.add_routes(app, ROUTER_KEY, UI_KEY)
    return app


@web.middleware
async def _metrics_only(request: web.Request, handler):
    """The remote metrics listener (--metrics-addr): GET/HEAD /metrics and nothing else, no body, any Host
    (a scraper names the host's address); the API's token-guarded paths are not routed on it at all."""
    if request.method not in ("GET", "HEAD") or request.body_exists:
        return _error(405, "only GET /metrics here", {"Allow": "GET, HEAD"})
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(e.status, e.text or e.reason)


def make_metrics_app(registry: object) -> web.Application:
    app = web.Application(middlewares=[_metrics_only], client_max_size=1024)
    app[REGISTRY_KEY] = registry
    app.router.add_get("/metrics", get_metrics)
    return app


class _OneLineServerLog(logging.LoggerAdapter):
    """aiohttp logs every malformed request (bad header, no Host...) with a traceback at ERROR; any local
    process can send those, so each becomes one warning line."""

    def exception(self, msg, *args, exc_info=True, **kw) -> None:  # type: ignore[override]
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        detail = " ".join(str(exc).split())[:200] if exc is not None else ""
        self.warning(f"{msg}: %s", *args, detail or type(exc).__name__, **kw)


def make_runner(app: web.Application) -> web.AppRunner:
    return web.AppRunner(app, access_log=None, logger=_OneLineServerLog(logging.getLogger("weavenet.api.http")))


def write_token(path: Path) -> str:
    """A fresh token in `path`, mode 0600, replaced atomically (a reader sees the old or the new one)."""
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f"{token}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return token


async def start_api(router: Router) -> web.AppRunner:
    sock = router.paths.socket
    sock.parent.mkdir(parents=True, exist_ok=True)
    token = write_token(router.paths.api_token)  # before the listeners: a client that connects can read it
    app = make_app(router, token)
    metrics = make_runner(make_metrics_app(app[REGISTRY_KEY])) if router.config.metrics_addr else None
    if metrics is not None:
        app.on_cleanup.append(lambda _app: metrics.cleanup())  # one cleanup (the caller's) stops both
    runner = make_runner(app)
    await runner.setup()
    if sock.exists():
        sock.unlink()  # stale from a crash: launch refuses to start while a router answers on it
    await web.UnixSite(runner, str(sock)).start()
    os.chmod(sock, 0o600)  # root's only; the token is still required on it (one rule for both listeners)
    if router.config.api_port:
        await web.TCPSite(runner, "127.0.0.1", router.config.api_port, reuse_address=True).start()
    if metrics is not None:
        host, _, port = str(router.config.metrics_addr).rpartition(":")
        await metrics.setup()
        await web.TCPSite(metrics, host.strip("[]"), int(port), reuse_address=True).start()
    return runner
