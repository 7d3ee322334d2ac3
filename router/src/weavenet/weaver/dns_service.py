"""asyncio adapter for weaveDNS: the record store as a channel of the gossip layer, and a UDP and a TCP
server for the containers (TCP for answers that do not fit a datagram: the UDP answer then has TC set).

The server listens on DNS_ADDRESS, a link-local address on the weave bridge that every host has and
that never crosses the mesh (the isolation rules keep its ARP and packets on the host), so each
container asks its own host's router, which answers from its local copy of the records.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

from ..mesh.core import Mesh
from ..mesh.errors import ProtocolError
from ..mesh.events import PeersChanged
from ..mesh.gossip import Gossiper, GossipSend
from ..mesh.grid import due_after
from ..nameserver import RecordStore, answer, parse_resolv_conf
from ..nameserver.answer import servfail
from ..nameserver.tcp import Deframer, frame

log = logging.getLogger("weavenet.nameserver")

CHANNEL = "dns"
DNS_ADDRESS = "169.254.53.53"   # on the weave bridge of every host; containers route it via ethwe
DNS_PORT = 53
FULL_SYNC_INTERVAL = 30.0   # anti-entropy (by the gossip layer): every record to a random neighbour
GC_INTERVAL = 60.0
UPSTREAM_TIMEOUT = 2.0
MAX_UPSTREAMS = 3        # servers tried per query (resolv.conf's own limit): a forward lasts at most 3 timeouts
MAX_FORWARDS = 64        # queries forwarded at once, one socket each: over it, SERVFAIL at once (counted)
LOG_EVERY = 60.0         # at most one warning per sender (or for bad queries) this often; the rest is counted
MAX_TCP_CONNECTIONS = 64  # open DNS-over-TCP connections at once: over it, new ones are closed at once (counted)
TCP_IDLE_TIMEOUT = 10.0   # a connection must complete a query this often (RFC 7766 suggests seconds) or is closed
MAX_TCP_BUFFERED = 256 * 1024  # answers waiting for a client that does not read: over it, the connection is dropped


class DnsService:
    def __init__(self, mesh: Mesh, domain: str, ttl: int, upstream: list[str], bridge: str,
                 resolv_conf: Path = Path("/etc/resolv.conf"), upstream_port: int = DNS_PORT) -> None:
        self.ttl = ttl
        self.bridge = bridge
        self.store = RecordStore(mesh.identity.name, mesh.topology.ourself.incarnation, domain,
                                 started=time.monotonic())  # the clock of the `now` given to on_message
        self._upstream = upstream
        self._resolv_conf = resolv_conf
        self._upstream_port = upstream_port
        self._known: frozenset[str] = frozenset()
        self._next_gc = 0.0
        self._transport: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_conns: set[_TcpConn] = set()
        self._forwards: set[asyncio.Task] = set()   # a reference to each running forward (and the cap)
        self._logged: dict[str, float] = {}
        self.counters = {"answered": 0, "forwarded": 0, "upstream_failed": 0, "forward_refused": 0,
                         "bad_queries": 0, "malformed_gossip": 0, "truncated": 0, "tcp_answered": 0,
                         "tcp_refused": 0, "tcp_dropped": 0}

    def refused(self) -> dict[str, int]:
        """Gossip refused (malformed, or records breaking the store's rules), per reason."""
        bad = {"malformed": self.counters["malformed_gossip"]} if self.counters["malformed_gossip"] else {}
        return {**bad, **self.store.refused}

    def _warn(self, key: str, now: float, msg: str, *args) -> None:
        """One log line per `key` per LOG_EVERY: a flood is counted, not logged."""
        if now - self._logged.get(key, -LOG_EVERY) >= LOG_EVERY:
            if len(self._logged) >= 4096:
                self._logged.clear()
            self._logged[key] = now
            log.warning(msg + " (further ones counted for %.0fs)", *args, LOG_EVERY)

    @property
    def domain(self) -> str:
        return self.store.domain

    # --- the gossip channel (new neighbours and anti-entropy: the gossip layer's) ----------------
    def attach(self, gossip: Gossiper) -> None:
        gossip.register(CHANNEL, self, FULL_SYNC_INTERVAL)

    def full_state(self) -> bytes:
        return self.store.encode_gossip()

    def _gossip(self, changed: list) -> list[GossipSend]:
        return [GossipSend(CHANNEL, self.store.encode_gossip(changed))] if changed else []

    def merge(self, src: str, payload: bytes, now: float) -> bytes | None:
        """`src`: the neighbour the mesh authenticated; the payload is hostile until the store checked it.
        Returns what was news to us (passed on). A bad message is counted and logged here; the connection
        stays (the data plane needs it)."""
        try:
            changed = self.store.merge(payload, now, src)
        except ProtocolError as e:
            self.counters["malformed_gossip"] += 1
            self._warn(src, now, "bad DNS gossip from %s: %s", src, e)
            return None
        return self.store.encode_gossip(changed) if changed else None

    def peers_changed(self, ev: PeersChanged) -> None:
        for p in self._known - ev.known:      # forgotten by the mesh (gone long enough): its names go
            n = self.store.peer_gone(p)
            if n:
                log.info("dropped %d DNS records of departed peer %s", n, p)
        for p in ev.known - self._known:
            self.store.peer_back(p)
        self._known = ev.known

    def next_deadline(self) -> float:
        """When `tick` next has work: the router's ticker sleeps until then."""
        return self._next_gc

    def tick(self, now: float) -> list[GossipSend]:
        if now >= self._next_gc:
            self._next_gc = due_after(now, GC_INTERVAL)
            self.store.gc(now)
        return []

    def add(self, name: str, address: str, container: str, now: float) -> list[GossipSend]:
        return self._gossip(self.store.add(name, address, container, now))

    def remove(self, container: str, now: float, address: str | None = None, name: str | None = None
               ) -> list[GossipSend]:
        return self._gossip(self.store.remove(container, now, address=address, name=name))

    def peer_gone(self, peer: str) -> None:
        self.store.peer_gone(peer)

    # --- the UDP and TCP servers ----------------------------------------------------------------------
    def _socket(self, kind: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Bound to the bridge: replies go out on it even though the host has no route to the
            # containers' subnets (the kernel treats the destination as on-link).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.bridge.encode())
            sock.bind((DNS_ADDRESS, DNS_PORT))
            if kind == socket.SOCK_STREAM:
                sock.listen(MAX_TCP_CONNECTIONS)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Server(self),
                                                                 sock=self._socket(socket.SOCK_DGRAM))
        try:
            self._tcp_server = await loop.create_server(lambda: _TcpConn(self), sock=self._socket(socket.SOCK_STREAM))
        except BaseException:
            self.stop()
            raise
        log.info("weaveDNS answering for %s on %s:%d (UDP and TCP)", self.domain, DNS_ADDRESS, DNS_PORT)

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for conn in list(self._tcp_conns):
            conn.drop()
        for task in list(self._forwards):
            task.cancel()

    def query(self, data: bytes, addr, deliver=None) -> None:
        """One query from `addr`; `deliver(bytes)` sends the reply (the UDP socket when None: `addr`'s
        datagram, sized for UDP; a TCP connection passes its own and gets answers up to 65535 bytes)."""
        loop = asyncio.get_running_loop()
        tcp = deliver is not None
        send = deliver if deliver is not None else (lambda reply: self._send(reply, addr))
        try:
            reply = answer(data, self.store, loop.time(), ttl=self.ttl, domain=self.domain, tcp=tcp)
        except Exception as e:  # noqa: BLE001 - dnspython on adversarial input: a counted drop, never a crash
            self.counters["bad_queries"] += 1
            self._warn("query", loop.time(), "DNS query from %s dropped: %s", addr, repr(e)[:100])
            return
        if reply is None:
            if len(self._forwards) >= MAX_FORWARDS:  # a slow upstream and a chatty client: refuse, don't pile up
                self.counters["forward_refused"] += 1
                send(servfail(data))
                return
            self.counters["forwarded"] += 1
            task = loop.create_task(self._forward(data, send))
            self._forwards.add(task)
            task.add_done_callback(self._forwards.discard)
        elif reply:
            self.counters["tcp_answered" if tcp else "answered"] += 1
            if reply[2] & 0x02:   # TC: the client will (or should) ask again over TCP
                self.counters["truncated"] += 1
            send(reply)

    def _send(self, data: bytes, addr) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def upstream(self) -> list[str]:
        if self._upstream:
            return self._upstream
        try:
            text = self._resolv_conf.read_text()
        except OSError:
            return []
        return [s for s in parse_resolv_conf(text, exclude=[DNS_ADDRESS]) if ":" not in s]

    async def _forward(self, data: bytes, send) -> None:
        """Ask each upstream in turn over UDP (one socket at a time, closed after), relay the first answer."""
        for server in self.upstream()[:MAX_UPSTREAMS]:
            try:
                reply = await _udp_exchange(data, (server, self._upstream_port), UPSTREAM_TIMEOUT)
            except (OSError, TimeoutError):
                continue
            send(reply)
            return
        self.counters["upstream_failed"] += 1
        send(servfail(data))


class _Server(asyncio.DatagramProtocol):
    def __init__(self, svc: DnsService) -> None:
        self.svc = svc

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            self.svc.query(data, addr)
        except Exception as e:  # noqa: BLE001 - one bad query must not stop the server (query counts its own)
            self.svc.counters["bad_queries"] += 1
            self.svc._warn("query", time.monotonic(), "DNS query from %s failed: %s", addr, repr(e)[:100])


class _TcpConn(asyncio.Protocol):
    """One DNS-over-TCP client: length-framed queries in, framed answers out (pipelined, any order, RFC
    7766). Bounded: MAX_TCP_CONNECTIONS at once, a complete query every TCP_IDLE_TIMEOUT, queries of at
    most MAX_TCP_QUERY bytes, MAX_TCP_BUFFERED bytes of answers the client has not read."""

    def __init__(self, svc: DnsService) -> None:
        self.svc = svc
        self.deframer = Deframer()
        self.transport: asyncio.Transport | None = None
        self.peer = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        if len(self.svc._tcp_conns) >= MAX_TCP_CONNECTIONS:
            self.svc.counters["tcp_refused"] += 1
            self.svc._warn("tcp-full", time.monotonic(), "DNS over TCP: %d connections open, refusing %s",
                           MAX_TCP_CONNECTIONS, self.peer)
            transport.abort()
            return
        self.svc._tcp_conns.add(self)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(TCP_IDLE_TIMEOUT, self.drop)

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()   # no graceful close: a client that stalls must not hold the slot longer

    def data_received(self, data: bytes) -> None:
        try:
            queries = self.deframer.feed(data)
        except ProtocolError as e:
            self._refuse(str(e))
            return
        for q in queries:
            self._arm()   # only whole queries keep a connection alive (a byte at a time does not)
            self.svc.query(q, self.peer, self.reply)

    def reply(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.get_write_buffer_size() > MAX_TCP_BUFFERED:
            self._refuse(f"client does not read its answers ({t.get_write_buffer_size()} bytes waiting)")
            return
        t.write(frame(data))

    def _refuse(self, why: str) -> None:
        self.svc.counters["tcp_dropped"] += 1
        host = self.peer[0] if self.peer else ""
        self.svc._warn(f"tcp:{host}", time.monotonic(), "DNS over TCP from %s dropped: %s", self.peer, why)
        self.drop()

    def pause_writing(self) -> None:   # the client reads slowly: stop reading its queries meanwhile
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.svc._tcp_conns.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self.transport = None


class _Exchange(asyncio.DatagramProtocol):
    """Waits for the upstream's answer to one query: the first datagram with the query's id."""

    def __init__(self, fut: asyncio.Future, qid: bytes) -> None:
        self.fut = fut
        self.qid = qid

    def datagram_received(self, data: bytes, addr) -> None:
        if not self.fut.done() and data[:2] == self.qid and len(data) >= 12:  # (stray or spoofed: ignored)
            self.fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


async def _udp_exchange(data: bytes, server: tuple[str, int], timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Exchange(fut, data[:2]),
                                                       remote_addr=server)
    try:
        transport.sendto(data)
        return await asyncio.wait_for(fut, timeout)
    finally:
        transport.close()
