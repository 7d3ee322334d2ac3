"""asyncio adapter for weaveDNS: the record store's gossip, and a UDP server for the containers.

The server listens on DNS_ADDRESS, a link-local address on the weave bridge that every host has and
that never crosses the mesh (the isolation rules keep its ARP and packets on the host), so each
container asks its own host's router, which answers from its local copy of the records.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from pathlib import Path

import dns.message
import dns.rcode

from ..dns import RecordStore, answer, parse_resolv_conf
from ..mesh.core import Action, Mesh
from ..mesh.errors import ProtocolError

log = logging.getLogger("weavenet.dns")

CHANNEL = "dns"
DNS_ADDRESS = "169.254.53.53"   # on the weave bridge of every host; containers route it via ethwe
DNS_PORT = 53
FULL_SYNC_INTERVAL = 30.0
GC_INTERVAL = 60.0
UPSTREAM_TIMEOUT = 2.0


class DnsService:
    def __init__(self, mesh: Mesh, domain: str, ttl: int, upstream: list[str], bridge: str,
                 resolv_conf: Path = Path("/etc/resolv.conf")) -> None:
        self.mesh = mesh
        self.ttl = ttl
        self.bridge = bridge
        self.store = RecordStore(mesh.identity.name, mesh.topology.ourself.incarnation, domain)
        self._upstream = upstream
        self._resolv_conf = resolv_conf
        self._neighbours: set[str] = set()
        self._known: set[str] = set()
        self._next_sync = 0.0
        self._next_gc = 0.0
        self._transport: asyncio.DatagramTransport | None = None
        self._rng = random.Random()
        self.counters = {"answered": 0, "forwarded": 0, "upstream_failed": 0}

    @property
    def domain(self) -> str:
        return self.store.domain

    # --- gossip ----------------------------------------------------------------------------------
    def _gossip(self, changed: list) -> list[Action]:
        return self.mesh.send_app(CHANNEL, self.store.encode_gossip(changed)) if changed else []

    def on_message(self, src: str, payload: bytes, now: float) -> list[Action]:
        try:
            return self._gossip(self.store.merge(payload, now))   # pass on what was news to us
        except ProtocolError as e:
            log.warning("bad DNS gossip from %s: %s", src, e)
            return []

    def tick(self, now: float) -> list[Action]:
        neighbours = self.mesh.routes.neighbours()
        actions: list[Action] = []
        for p in sorted(neighbours - self._neighbours):   # a new neighbour gets everything
            actions += self.mesh.send_app(CHANNEL, self.store.encode_gossip(), p)
        self._neighbours = neighbours
        peers = set(self.mesh.topology.peers) - {self.mesh.identity.name}
        for p in self._known - peers:      # forgotten by the mesh (gone long enough): its names go
            n = self.store.peer_gone(p)
            if n:
                log.info("dropped %d DNS records of departed peer %s", n, p)
        for p in peers - self._known:
            self.store.peer_back(p)
        self._known = peers
        if now >= self._next_sync:
            self._next_sync = now + FULL_SYNC_INTERVAL * self._rng.uniform(0.5, 1.5)
            if neighbours:
                actions += self.mesh.send_app(CHANNEL, self.store.encode_gossip(),
                                              self._rng.choice(sorted(neighbours)))
        if now >= self._next_gc:
            self._next_gc = now + GC_INTERVAL
            self.store.gc(now)
        return actions

    def add(self, name: str, address: str, container: str, now: float) -> list[Action]:
        return self._gossip(self.store.add(name, address, container, now))

    def remove(self, container: str, now: float, address: str | None = None, name: str | None = None
               ) -> list[Action]:
        return self._gossip(self.store.remove(container, now, address=address, name=name))

    def peer_gone(self, peer: str) -> None:
        self.store.peer_gone(peer)

    # --- the UDP server ----------------------------------------------------------------------------
    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Bound to the bridge: replies go out on it even though the host has no route to the
            # containers' subnets (the kernel treats the destination as on-link).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.bridge.encode())
            sock.bind((DNS_ADDRESS, DNS_PORT))
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Server(self), sock=sock)
        log.info("weaveDNS answering for %s on %s:%d", self.domain, DNS_ADDRESS, DNS_PORT)

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def query(self, data: bytes, addr) -> None:
        loop = asyncio.get_running_loop()
        reply = answer(data, self.store, loop.time(), ttl=self.ttl, domain=self.domain)
        if reply is None:
            self.counters["forwarded"] += 1
            loop.create_task(self._forward(data, addr))
        elif reply and self._transport is not None:
            self.counters["answered"] += 1
            self._transport.sendto(reply, addr)

    def upstream(self) -> list[str]:
        if self._upstream:
            return self._upstream
        try:
            text = self._resolv_conf.read_text()
        except OSError:
            return []
        return [s for s in parse_resolv_conf(text, exclude=[DNS_ADDRESS]) if ":" not in s]

    async def _forward(self, data: bytes, addr) -> None:
        for server in self.upstream():
            try:
                reply = await _udp_exchange(data, server, UPSTREAM_TIMEOUT)
            except (OSError, TimeoutError):
                continue
            if self._transport is not None:
                self._transport.sendto(reply, addr)
            return
        self.counters["upstream_failed"] += 1
        try:
            resp = dns.message.make_response(dns.message.from_wire(data))
            resp.set_rcode(dns.rcode.SERVFAIL)
            if self._transport is not None:
                self._transport.sendto(resp.to_wire(), addr)
        except Exception:  # noqa: BLE001 - a query we cannot even parse gets no answer
            pass


class _Server(asyncio.DatagramProtocol):
    def __init__(self, svc: DnsService) -> None:
        self.svc = svc

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            self.svc.query(data, addr)
        except Exception:  # one bad query must not stop the server
            log.exception("DNS query failed")


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, fut: asyncio.Future) -> None:
        self.fut = fut

    def datagram_received(self, data: bytes, addr) -> None:
        if not self.fut.done():
            self.fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


async def _udp_exchange(data: bytes, server: str, timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Exchange(fut), remote_addr=(server, DNS_PORT))
    try:
        transport.sendto(data)
        return await asyncio.wait_for(fut, timeout)
    finally:
        transport.close()
