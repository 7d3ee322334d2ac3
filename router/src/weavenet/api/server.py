"""The router's local HTTP API, served on a unix socket and on 127.0.0.1 only."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from . import format as fmt
from .metrics import make_registry, render

if TYPE_CHECKING:
    from ..router.runtime import Router

log = logging.getLogger("weavenet.api")
ROUTER_KEY = web.AppKey("router", object)
REGISTRY_KEY = web.AppKey("registry", object)


def _router(request: web.Request) -> Router:
    return request.app[ROUTER_KEY]  # type: ignore[return-value]


@web.middleware
async def _value_errors(request: web.Request, handler):
    """Bad input raised anywhere below a handler becomes a 400 with a one-line JSON error."""
    try:
        return await handler(request)
    except ValueError as e:
        return web.json_response({"error": str(e)}, status=400)
    except (RuntimeError, OSError) as e:  # the kernel, Docker or nft refused: still one line for the CLI
        return web.json_response({"error": str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__},
                                 status=500)
    except web.HTTPException:
        raise
    except Exception as e:  # a bug: the traceback goes to the log, the caller still gets one line
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": f"internal error ({type(e).__name__}: {e}); see the router log"},
                                 status=500)


async def _json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="request body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="request body must be a JSON object")
    return body


def _str_list(body: dict, key: str) -> list[str]:
    v = body.get(key) or []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise web.HTTPBadRequest(text=f"{key!r} must be a list of strings")
    return v


async def get_status(request: web.Request) -> web.Response:
    return web.Response(text=fmt.status_summary(_router(request).report()))


async def get_report(request: web.Request) -> web.Response:
    return web.json_response(_router(request).report())


async def post_connect(request: web.Request) -> web.Response:
    body = await _json_body(request)
    router = _router(request)
    peers = _str_list(body, "peers")
    if request.path == "/connect":
        targets = router.connect(peers, bool(body.get("replace", False)))
    else:
        targets = router.forget(peers)
    return web.json_response({"targets": targets})


async def post_attach(request: web.Request) -> web.Response:
    body = await _json_body(request)
    router = _router(request)
    op = router.attach if request.path == "/attach" else router.detach
    return web.json_response(await op(str(body.get("target", "")), _str_list(body, "cidrs")))


async def post_expose(request: web.Request) -> web.Response:
    body = await _json_body(request)
    result = await _router(request).expose(_str_list(body, "cidrs"), hide=request.path == "/hide")
    return web.json_response(result)


async def post_rmpeer(request: web.Request) -> web.Response:
    body = await _json_body(request)
    return web.json_response({"addresses": _router(request).rmpeer(str(body.get("peer", "")))})


async def get_ipam(request: web.Request) -> web.Response:
    return web.Response(text=_router(request).ipam_status())


async def post_dns(request: web.Request) -> web.Response:
    body = await _json_body(request)
    wl = _router(request).workloads
    op = wl.dns_add if request.path == "/dns-add" else wl.dns_remove
    fqdn = body.get("fqdn")
    return web.json_response(await op(str(body.get("target", "")), _str_list(body, "ips"),
                                      str(fqdn) if fqdn else None))


async def get_dns_lookup(request: web.Request) -> web.Response:
    return web.json_response({"addresses": _router(request).workloads.dns_lookup(request.query.get("name", ""))})


async def get_ps(request: web.Request) -> web.Response:
    return web.json_response({"containers": _router(request).ps()})


async def get_metrics(request: web.Request) -> web.Response:
    body = render(request.app[REGISTRY_KEY])  # type: ignore[arg-type]
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(router: Router) -> web.Application:
    app = web.Application(middlewares=[_value_errors])
    app[ROUTER_KEY] = router
    app[REGISTRY_KEY] = make_registry(router)
    app.router.add_get("/status", get_status)
    app.router.add_get("/report", get_report)
    app.router.add_post("/connect", post_connect)
    app.router.add_post("/forget", post_connect)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/ps", get_ps)
    app.router.add_post("/rmpeer", post_rmpeer)
    app.router.add_get("/ipam", get_ipam)
    app.router.add_post("/dns-add", post_dns)
    app.router.add_post("/dns-remove", post_dns)
    app.router.add_get("/dns-lookup", get_dns_lookup)
    app.router.add_post("/attach", post_attach)
    app.router.add_post("/detach", post_attach)
    app.router.add_post("/expose", post_expose)
    app.router.add_post("/hide", post_expose)
    return app


async def start_api(router: Router) -> web.AppRunner:
    runner = web.AppRunner(make_app(router), access_log=None)
    await runner.setup()
    sock = router.paths.socket
    sock.parent.mkdir(parents=True, exist_ok=True)
    if sock.exists():
        sock.unlink()  # stale from a crash: launch refuses to start while a router answers on it
    await web.UnixSite(runner, str(sock)).start()
    os.chmod(sock, 0o660)
    if router.config.api_port:
        await web.TCPSite(runner, "127.0.0.1", router.config.api_port, reuse_address=True).start()
    return runner
