"""The live page: read-only, on the local API's 127.0.0.1 port, behind the API's own rules.

How a browser gets in without weakening them: `weave ui` (holding the bearer token, as every API client)
asks `POST /ui/ticket` for a one-time ticket and prints a URL with it. Opening it (`GET /ui/login`) spends the
ticket (60 s to use it, once) for a session cookie: HttpOnly (no script reads it), SameSite=Strict (no other
site's page sends it), Path=/ui. Every UI request still passes the edge checks of server.py (loopback Host:
no DNS rebinding; no Origin header: the page's own GETs send none, a cross-site request does), and the cookie
opens GET on /ui/ only — nothing that changes the router, and nothing secret (no token, no password).
Responses carry a strict Content-Security-Policy; the picture is an <img> (scripts in an image never run).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import secrets
import time
from importlib import resources

from aiohttp import web

from ..health import render
from ..health.view import build

COOKIE = "weave_ui"
TICKET_TTL = 60.0
SESSION_TTL = 12 * 3600.0
MAX_TICKETS = 16          # outstanding tickets; the oldest goes first
MAX_SESSIONS = 32
UI_PREFIX = "/ui/"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
STATIC = {"page.js": "text/javascript", "page.css": "text/css"}


def _key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "backslashreplace")).hexdigest()


class UiAuth:
    """Tickets and sessions (stored as hashes), on the loop only. Bounded; expired ones are dropped."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._tickets: dict[str, float] = {}    # sha256(ticket) -> expiry
        self._sessions: dict[str, float] = {}   # sha256(session) -> expiry

    @staticmethod
    def _expire(table: dict[str, float], now: float, cap: int) -> None:
        for k in [k for k, until in table.items() if now >= until]:
            del table[k]
        while len(table) >= cap:
            del table[next(iter(table))]

    def new_ticket(self) -> str:
        now = self.clock()
        self._expire(self._tickets, now, MAX_TICKETS)
        ticket = secrets.token_urlsafe(32)
        self._tickets[_key(ticket)] = now + TICKET_TTL
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """A new session for a valid ticket (spent: a second use fails), else None."""
        now = self.clock()
        until = self._tickets.pop(_key(ticket), None)
        if until is None or now >= until:
            return None
        self._expire(self._sessions, now, MAX_SESSIONS)
        session = secrets.token_urlsafe(32)
        self._sessions[_key(session)] = now + SESSION_TTL
        return session

    def valid(self, session: str) -> bool:
        until = self._sessions.get(_key(session))
        return until is not None and self.clock() < until


def check(request: web.Request, auth: UiAuth) -> None:
    """For the edge (server.py): a UI path needs GET/HEAD and a live session, /ui/login only its ticket."""
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET"])
    if request.path == "/ui/login":
        return
    session = request.cookies.get(COOKIE, "")
    if not (session and auth.valid(session)):
        raise web.HTTPUnauthorized(text="no UI session: run 'weave ui' for a login URL")


def _headers(content_type: str | None = None) -> dict:
    h = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Cache-Control": "no-store",
         "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    if content_type:
        h["Content-Type"] = content_type
    return h


def ticket_url(port: int, ticket: str) -> str:
    return f"http://127.0.0.1:{port}/ui/login?ticket={ticket}"


def page_data(report: dict) -> dict:
    """What the page shows: this router, its peers' health, every link of the mesh, this host's containers
    and subnets. Read-only, nothing secret (the report itself carries none)."""
    r = report["router"]
    view = build(report)
    subnets = set()
    for c in r.get("containers") or []:
        for cidr in c.get("cidrs") or []:
            try:
                subnets.add(str(ipaddress.ip_interface(cidr).network))
            except ValueError:
                continue
    ipam = r.get("ipam") or {}
    return {
        "name": r["name"], "nickname": r.get("nickname", ""), "version": r.get("version", ""),
        "peers": (r.get("health") or {}).get("peers") or [],
        "nodes": [{"name": n.name, "nickname": n.nickname, "address": n.address, "containers": n.containers,
                   "ours": n.ours, "summary_age_s": n.summary_age_s} for n in view.nodes.values()],
        "links": [{"a": e.a, "b": e.b, "a_nick": view.nodes[e.a].nickname, "b_nick": view.nodes[e.b].nickname,
                   "state": e.state, "text": render.edge_words(e)} for e in view.edges],
        "containers": [{"id": c["id"][:12] if len(c["id"]) == 64 else c["id"], "name": c.get("name", ""),
                        "cidrs": c.get("cidrs", []), "running": c.get("running", True)}
                       for c in r.get("containers") or []],
        "exposed": r.get("exposed") or [],
        "subnets": sorted(subnets),
        "ipam": {"range": ipam.get("range"), "default_subnet": ipam.get("default_subnet")},
    }


class SvgCache:
    """The last picture, per DOT source: the page asks every few seconds, Graphviz runs only on change,
    one at a time, off the loop."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._last: tuple[str, bytes] | None = None

    async def get(self, dot_source: str) -> bytes:
        async with self._lock:
            if self._last is not None and self._last[0] == dot_source:
                return self._last[1]
            svg = await asyncio.to_thread(render.svg, dot_source)
            self._last = (dot_source, svg)
            return svg


def _static(name: str) -> bytes:
    return resources.files("weavenet.api").joinpath("static", name).read_bytes()


def add_routes(app: web.Application, router_key: web.AppKey, auth_key: web.AppKey) -> None:
    svg_cache = SvgCache()

    async def post_ticket(request: web.Request) -> web.Response:
        router = request.app[router_key]
        port = router.config.api_port
        if not port:
            raise ValueError("the API listens on no TCP port (api_port 0): a browser cannot reach the page")
        return web.json_response({"url": ticket_url(port, request.app[auth_key].new_ticket()),
                                  "expires_in_s": TICKET_TTL})

    async def get_login(request: web.Request) -> web.Response:
        session = request.app[auth_key].redeem(request.query.get("ticket", "")[:128])
        if session is None:
            raise web.HTTPUnauthorized(text="this login URL is spent or expired: run 'weave ui' for a new one")
        resp = web.Response(status=303, headers={**_headers(), "Location": "/ui/"})
        resp.set_cookie(COOKIE, session, max_age=int(SESSION_TTL), path="/ui", httponly=True, samesite="Strict")
        return resp

    async def get_index(request: web.Request) -> web.Response:
        return web.Response(body=_static("index.html"), headers=_headers("text/html; charset=utf-8"))

    async def get_static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), headers=_headers(STATIC[name] + "; charset=utf-8"))

    async def get_data(request: web.Request) -> web.Response:
        return web.json_response(page_data(request.app[router_key].report()), headers=_headers())

    async def get_svg(request: web.Request) -> web.Response:
        view = build(request.app[router_key].report())
        try:
            svg = await svg_cache.get(render.dot(view))
        except render.RenderError as e:
            raise RuntimeError(str(e)) from None
        return web.Response(body=svg, headers=_headers("image/svg+xml"))

    app.router.add_post("/ui/ticket", post_ticket)
    app.router.add_get("/ui/login", get_login)
    app.router.add_get("/ui/", get_index)
    app.router.add_get("/ui/data", get_data)
    app.router.add_get("/ui/topology.svg", get_svg)
    app.router.add_get("/ui/{name}", get_static)


def is_ui_get(request: web.Request) -> bool:
    """UI paths that take the session cookie instead of the bearer token (POST /ui/ticket takes the token)."""
    return request.path.startswith(UI_PREFIX) and request.path != "/ui/ticket"

