"""The router process: ``build_router`` makes every part (mesh, data plane, IPAM, DNS, attachments,
workloads) in one go from its dependencies; ``Router.start`` then does the I/O (listen, reconcile, threads)
and runs the ticker; ``execute`` carries out the mesh's actions. Peer sockets are in ``peer_transport``; no
protocol logic lives here. Who owns which state, on which thread: docs/architecture.md."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import random
import secrets
import signal
import time
from collections.abc import Callable

from .. import __version__
from ..containers.client import Docker
from ..datapath.pmtu import overlay_mtu
from ..health.service import HealthService
from ..health.summary import SummaryStore
from ..health.tracker import HealthTracker
from ..ipam.init import default_init, parse_init
from ..mesh.core import Close, Dial, Mesh, MeshConfig, Patience, Send, Throttle
from ..mesh.crypto import password_digest
from ..mesh.gossip import Gossiper
from ..mesh.grid import next_step
from ..mesh.handshake import LocalIdentity
from ..net.expose import ensure_service_address
from .attachments import EXPOSE_KEY, Attachments
from .config import RouterConfig
from .dataplane import BRIDGE, Dataplane, DataplaneConfig
from .dns_service import DNS_ADDRESS, DnsService
from .docker_events import EventWatcher
from .events import Dispatcher
from .ipam_service import IpamService
from .paths import Paths
from .peer_transport import PeerProtocol, apply_patience
from .signals import RESTART_SIGNAL
from .state import check_all, load_or_create_peer_name, load_targets, save_targets
from .workloads import Workloads

log = logging.getLogger("weavenet.weaver")

# The ticker is deadline-driven: it sleeps until the earliest deadline of its subsystems (mesh timers,
# data plane, health, gossip rounds, IPAM, DNS), and an event that makes work due sooner (a topology change,
# a connection up or down) wakes it at once: routes are recomputed right after a change, well within 100 ms.
MIN_SLEEP = 0.01    # a deadline already past (or a part failing on every tick) never makes the loop spin
FALLBACK_SLEEP = 0.1   # the tick period of a subsystem whose deadline cannot be had (a bug): the old fixed tick
DIAL_TIMEOUT = 5.0


async def build_router(config: RouterConfig, paths: Paths, *, dataplane: Dataplane | None = None,
                       attachments: Attachments | None = None, docker: Docker | None = None,
                       clock: Callable[[], float] = time.monotonic, serve_dns: bool = True) -> Router:
    """A Router with every part built; the defaults are the real ones (root, the kernel, Docker).

    Tests pass a data plane and attachments that need no root, and ``serve_dns=False`` (the DNS server
    binds a link-local address on the bridge): names are still stored and gossiped."""
    check_all(paths)   # every state file readable before anything (files, links, rules) is changed
    if config.mtu is None:   # not set: derived from the underlay (the route to the peers, minus encapsulation)
        config = dataclasses.replace(config, mtu=overlay_mtu(config.peers))
    name = load_or_create_peer_name(paths, config.name)
    if dataplane is None:
        dataplane = Dataplane(DataplaneConfig(config.port, config.mtu, config.fastdp,
                                              encrypted=bool(config.password)), name)
    # Before the mesh: its handshake advertises the VXLAN device's MAC (features()). Needs root.
    await asyncio.to_thread(dataplane.setup)
    docker = docker or Docker()
    if attachments is None:
        attachments = Attachments(paths.attachments_file, BRIDGE, config.mtu, dataplane.uplinks(), docker=docker,
                                  service=DNS_ADDRESS if config.dns else None)
    mcfg = MeshConfig(password_hash=password_digest(config.password) if config.password else None,
                      conn_limit=config.conn_limit, discovery=config.discovery, max_peers=config.max_peers)
    identity = LocalIdentity(name=name, nickname=config.nickname, uid=secrets.randbits(63), port=config.port,
                             features=dataplane.features())
    mesh = Mesh(identity, incarnation=time.time_ns() // 1_000_000, config=mcfg, rng=random.Random())
    return Router(config, paths, mesh=mesh, dataplane=dataplane, attachments=attachments,
                  events=EventWatcher(docker, attachments.on_event, attachments.request_reconcile),
                  clock=clock, serve_dns=serve_dns)


class Router:
    """Everything here runs on the asyncio loop. Built whole (see ``build_router``); ``start``/``wait_stopped``
    do the I/O."""

    def __init__(self, config: RouterConfig, paths: Paths, *, mesh: Mesh, dataplane: Dataplane,
                 attachments: Attachments, events: EventWatcher, clock: Callable[[], float] = time.monotonic,
                 serve_dns: bool = True) -> None:
        self.config = config
        self.paths = paths
        self.clock = clock
        self.started = time.time()
        self.name = mesh.identity.name
        self.dataplane = dataplane
        self.mesh = mesh
        self.peers = config.peers or load_targets(paths)
        # How the ring is created: --ipalloc-init, else consensus among the peers given and this router.
        self.ipam = IpamService(mesh, paths.ipam_file, ipaddress.IPv4Network(config.ipalloc_range),
                                ipaddress.IPv4Network(config.ipalloc_default_subnet)
                                if config.ipalloc_default_subnet else None,
                                init=parse_init(config.ipalloc_init) if config.ipalloc_init
                                else default_init(len(self.peers)), on_claim_refused=self._claim_refused)
        self.dns = DnsService(mesh, config.dns_domain, config.dns_ttl, config.dns_upstream, BRIDGE) \
            if config.dns else None
        mc = mesh.config
        self.health = HealthService(
            HealthTracker(self.name, mtu=config.mtu, fastdp=dataplane.fastdp, heartbeat_interval=mc.heartbeat_interval,
                          max_peers=mc.max_peers),
            SummaryStore(self.name, time.time_ns() // 1_000_000, mc.max_peers), mesh.identity.nickname)
        # The mesh's events reach the data plane, IPAM, DNS, health and the gossip layer through it (see execute).
        self.dispatch = Dispatcher(mesh, Gossiper(), dataplane, self.ipam, self.dns, self.health)
        self.attachments = attachments
        self.workloads = Workloads(attachments, self.ipam, self.dns, self.execute, clock)
        self._events = events
        self._serve_dns = serve_dns
        self.transports: dict[int, asyncio.Transport] = {}
        self._server: asyncio.base_events.Server | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._keep_datapath = False   # set by request_restart
        self._sleeper: asyncio.Future | None = None   # the ticker's sleep, while it sleeps
        self._wake_at = 0.0                          # ... until then
        self.exit_status = 0   # non-zero: the router ends on its own (e.g. 70, the data plane failed)

    # --- actions from the core -------------------------------------------------------------------
    def execute(self, actions: list) -> None:
        """Mesh actions, mesh events and the subsystems' send requests: events are dispatched (see
        weaver/events.py), and every resulting action is carried out here."""
        for a in self.dispatch.run(actions, self.clock()):
            if isinstance(a, Send):
                t = self.transports.get(a.conn_id)
                if t is not None and not t.is_closing():
                    t.write(a.data)
            elif isinstance(a, Close):
                t = self.transports.pop(a.conn_id, None)
                if t is not None:
                    t.close()  # flushes what was written first (e.g. a CLOSING message)
            elif isinstance(a, Patience):
                apply_patience(self.transports.get(a.conn_id), self.mesh.config, a.patient)
            elif isinstance(a, Dial):
                task = asyncio.get_running_loop().create_task(self._dial(a))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        # The mesh's deadline moves earlier with every change that makes work for anyone (a connection up or
        # down, a topology change, gossip queued), the data plane's with a fast-path peer's status: then tick
        # now, not at the planned wake-up.
        sleeper = self._sleeper
        if sleeper is not None and not sleeper.done() and \
                (self.mesh.next_deadline() < self._wake_at or self.dataplane.wants_tick()):
            sleeper.set_result(None)

    async def _dial(self, a: Dial) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: PeerProtocol(self, a.conn_id), a.host, a.port),
                                   DIAL_TIMEOUT)
        except (TimeoutError, OSError) as e:
            reason = "connection timed out" if isinstance(e, asyncio.TimeoutError) else (e.strerror or str(e))
            self.execute(self.mesh.dial_failed(a.conn_id, reason.lower(), self.clock()))

    # --- operator commands (called by the API) ---------------------------------------------------
    def connect(self, peers: list[str], replace: bool) -> list[str]:
        self.execute(self.mesh.connect(peers, self.clock(), replace=replace))
        self._save_targets()
        return self.mesh.connmaker.explicit()

    def forget(self, peers: list[str]) -> list[str]:
        self.execute(self.mesh.forget(peers, self.clock()))
        self._save_targets()
        return self.mesh.connmaker.explicit()

    # netlink, Docker and nft calls block: the Attachments actor's thread runs them, we await it.
    async def attach(self, target: str, specs: list[str]) -> dict:
        return await self.workloads.attach(target, specs)

    async def detach(self, target: str, cidrs: list[str] | None) -> dict:
        return await self.workloads.detach(target, cidrs)

    def rmpeer(self, peer: str) -> int:
        n, actions = self.ipam.rmpeer(peer, self.clock())
        self.execute(actions)
        if self.dns is not None:
            self.dns.peer_gone(peer)
        return n

    def ipam_status(self) -> str:
        nicks = {e.name: e.nickname for e in self.mesh.topology.peers.values()}
        return self.ipam.status_text(nicks)

    async def expose(self, specs: list[str], hide: bool = False) -> dict:
        return await self.workloads.expose(specs, hide)

    def ps(self) -> list[dict]:
        """From the attachments' last snapshot: never waits for an attach in progress."""
        snap = self.attachments.snapshot
        rows = snap.ps()
        if snap.exposed:
            rows.insert(0, {"id": EXPOSE_KEY, "name": EXPOSE_KEY, "mac": self.dataplane.bridge_mac or "",
                            "cidrs": list(snap.exposed), "running": True})
        return rows

    def _save_targets(self) -> None:
        try:
            save_targets(self.paths, self.mesh.connmaker.explicit())
        except OSError as e:
            log.warning("cannot persist targets: %s", e)

    def report(self) -> dict:
        now = self.clock()
        r = self.mesh.report(now)
        for c in r["connections"]:
            if c["state"] == "established" and c.get("name"):
                c.update(self.dataplane.connection_info(c["name"]))
        dp = self.dataplane.report(now)
        r["macs"] = dp.pop("macs")
        r["dataplane"] = dp
        snap = self.attachments.snapshot   # a snapshot: an attach in progress never blocks the report
        r["containers"] = snap.ps()
        r["exposed"] = list(snap.exposed)
        r["config"] = self.config.public()
        r["health"] = self.health.report(now, {e.name: e.nickname for e in self.mesh.topology.peers.values()})
        r["ipam"] = self.ipam.report()
        if self.dns is not None:
            r["dns"] = {"domain": self.dns.domain, "address": DNS_ADDRESS, "upstream": self.dns.upstream(),
                        "records": self.dns.store.report(), **self.dns.counters,
                        "refused": self.dns.refused()}
        r["version"] = __version__
        r["port"] = self.config.port
        r["pid"] = os.getpid()
        r["uptime_s"] = round(time.time() - self.started, 1)
        return {"version": __version__, "router": r}

    # --- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        if self.dns is not None and self._serve_dns:
            await asyncio.to_thread(ensure_service_address, DNS_ADDRESS, BRIDGE)
            try:
                await self.dns.start()
            except OSError as e:  # e.g. a local resolver holding *:53 without SO_REUSEADDR
                log.error("weaveDNS cannot listen on %s:53 (%s): names are still gossiped, but containers on "
                          "this host get no answers", DNS_ADDRESS, e.strerror or e)
        self.attachments.start(self.workloads.on_record)
        await self.attachments.reconcile()
        self.workloads.forget_stale_leases()
        # The watcher reconciles again once subscribed: the first pass (above) puts the rules and
        # netns attachments in place even without Docker, the second covers events missed in between.
        self._events.start()
        self._server = await loop.create_server(lambda: PeerProtocol(self), host=None, port=cfg.port,
                                                reuse_address=True)
        if self.peers:
            self.connect(self.peers, replace=True)
        else:
            self._save_targets()
        log.info("router %s(%s) listening on port %d, encryption %s, discovery %s", self.mesh.identity.name,
                 self.mesh.identity.nickname, cfg.port,
                 "on" if cfg.password else "off", "on" if cfg.discovery else "off")
        self.dataplane.start(loop)
        task = loop.create_task(self._ticker())
        self._tasks.add(task)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(RESTART_SIGNAL, self.request_restart)

    def _claim_refused(self, container_id: str, address: str, reason: str) -> None:
        """Another router already uses an address given to one of ours: take it off the container."""
        async def detach() -> None:
            try:
                await self.workloads.detach(container_id, [address])
            except (ValueError, RuntimeError) as e:
                log.warning("cannot detach %s from %s: %s", address, container_id[:12], e)
        task = asyncio.get_running_loop().create_task(detach())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ticker(self) -> None:
        # Each subsystem ticks on its own: one that fails (a bug, input that should have been refused)
        # must not starve the others of their heartbeats and timers. Its traceback: once a minute.
        steps = (("mesh", lambda now: self.mesh.tick(now)),
                 ("dataplane", lambda now: self.dataplane.sync(now)),
                 ("health", lambda now: self.health.tick(now, len(self.attachments.snapshot.rows))),
                 ("gossip", lambda now: self.dispatch.gossip.tick(now)),
                 ("ipam", lambda now: self.ipam.tick(now)),
                 ("dns", lambda now: self.dns.tick(now) if self.dns is not None else []))
        deadlines = (("mesh", lambda: self.mesh.next_deadline()),
                     ("dataplane", lambda: self.dataplane.next_deadline()),
                     ("health", lambda: self.health.next_deadline()),
                     ("gossip", lambda: self.dispatch.gossip.next_deadline()),
                     ("ipam", lambda: self.ipam.next_deadline()),
                     ("dns", lambda: self.dns.next_deadline() if self.dns is not None else float("inf")))
        throttle = Throttle()
        loop = asyncio.get_running_loop()
        while True:
            await self._sleep(loop, self._next_wake(deadlines, throttle))
            now = self.clock()
            for name, step in steps:
                try:
                    self.execute(step(now))
                except SystemExit as e:  # the data plane gave up (already logged): a clean, orderly exit
                    self.exit_status = e.code if isinstance(e.code, int) else 1
                    self._stop.set()
                    return
                except Exception:  # noqa: BLE001 - a bug in one tick must not kill the router
                    held = throttle.allow(name, now)
                    if held is not None:
                        log.exception("%s tick failed%s", name, f" ({held} more failures not logged)" if held else "")

    def _next_wake(self, deadlines, throttle: Throttle) -> float:
        now = self.clock()
        due = next_step(now)   # at least on every grid step: dead datapath threads, the stall checks
        for name, deadline in deadlines:
            try:
                due = min(due, deadline())
            except Exception:  # noqa: BLE001 - a bug in one subsystem: it ticks at the old fixed period
                due = min(due, now + FALLBACK_SLEEP)
                held = throttle.allow(f"{name}-deadline", now)
                if held is not None:
                    log.exception("%s deadline failed%s", name, f" ({held} more failures not logged)" if held else "")
        return due

    async def _sleep(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        """Until `until` (self.clock's time) or until `execute` finds work due sooner."""
        self._wake_at = until
        fut = self._sleeper = loop.create_future()
        handle = loop.call_later(max(MIN_SLEEP, until - self.clock()), _release, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._sleeper = None

    def request_stop(self) -> None:
        self._stop.set()

    def request_restart(self) -> None:
        """Stop for a restart (`weave stop --restart`): the fast path keeps forwarding meanwhile."""
        self._keep_datapath = True
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()
        if not self.exit_status:
            log.info("router shutting down")
        self.execute(self.mesh.shutdown())
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        self._events.stop()
        if self.dns is not None:
            self.dns.stop()
        await asyncio.sleep(0.05)  # let transports flush their CLOSING messages
        await asyncio.to_thread(self.attachments.close)   # the operation in progress ends first
        self.dataplane.stop(asyncio.get_running_loop(), keep_datapath=self._keep_datapath)


def _release(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
