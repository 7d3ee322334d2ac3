"""An in-memory network of sans-I/O Mesh cores: bytes move between them without sockets."""

from __future__ import annotations

import random
from collections.abc import Callable

from weavenet.mesh.core import Close, Dial, Mesh, MeshConfig, Patience, Send
from weavenet.mesh.crypto import password_digest
from weavenet.mesh.events import EVENT_TYPES
from weavenet.mesh.handshake import LocalIdentity


class SimNet:
    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.now = 1000.0
        self.meshes: dict[str, Mesh] = {}       # address -> mesh
        self.links: dict[tuple[str, int], tuple[str, int]] = {}  # (addr, conn) -> (addr, conn)
        self.queue: list[tuple[str, object]] = []
        self.cut: set[frozenset[str]] = set()   # address pairs whose traffic is silently dropped
        self.down: set[str] = set()
        self.hung: set[str] = set()             # routers that stopped (no ticks, nothing sent) on a live kernel
        # address -> what turns its mesh's outputs (actions and events) into actions: a dispatcher. Without
        # one, events are dropped.
        self.hooks: dict[str, Callable[[list], list]] = {}
        self.recording: set[str] = set()        # addresses whose events are kept, in order, in `events`
        self.events: dict[str, list] = {}
        # (addr, conn) -> when the oldest of its sends still unacknowledged (dropped: peer down, link cut)
        # left: after the mesh's tcp_user_timeout the kernel ends the connection (TCP_USER_TIMEOUT, as the
        # router's adapter sets it), as here.
        self.unacked: dict[tuple[str, int], float] = {}
        # (addr, conn) -> when its kernel last heard the other end (data, acks, keepalive answers): on an
        # idle connection whose path broke (heartbeats keep none idle: the backstop), keepalive probes go
        # unanswered and the kernel ends it tcp_keepalive + max(1 s, user timeout) after that.
        self.heard: dict[tuple[str, int], float] = {}
        self.patient: set[tuple[str, int]] = set()   # sockets given the patient limits (Patience)

    def add(self, index: int, password: str | None = None, discovery: bool = True, name: str | None = None) -> Mesh:
        addr = f"192.0.2.{index}:6783"
        ident = LocalIdentity(name or f"02:00:00:00:{index // 256:02x}:{index % 256:02x}", f"h{index}",
                              self.rng.getrandbits(63), 6783)
        cfg = MeshConfig(password_hash=password_digest(password) if password else None, discovery=discovery)
        m = Mesh(ident, incarnation=int(self.now * 1000), config=cfg, rng=random.Random(index))
        self.meshes[addr] = m
        return m

    def addr_of(self, m: Mesh) -> str:
        return next(a for a, x in self.meshes.items() if x is m)

    def run(self, addr: str, actions: list) -> None:
        if addr in self.recording:
            self.events.setdefault(addr, []).extend(a for a in actions if isinstance(a, EVENT_TYPES))
        hook = self.hooks.get(addr)
        if hook is not None:
            actions = hook(list(actions))
        for a in actions:
            if not isinstance(a, EVENT_TYPES):
                self.queue.append((addr, a))

    def _deliver(self) -> None:
        while self.queue:
            src, act = self.queue.pop(0)
            if src in self.down or src in self.hung:
                continue
            m = self.meshes[src]
            if isinstance(act, Dial):
                dst = f"{act.host}:{act.port}"
                if dst not in self.meshes or dst in self.down or frozenset((src, dst)) in self.cut:
                    self.run(src, m.dial_failed(act.conn_id, "connection refused", self.now))
                    continue
                peer = self.meshes[dst]
                cid, acts = peer.accept(src.split(":")[0], 40000 + act.conn_id, self.now)
                self.links[(src, act.conn_id)] = (dst, cid)
                self.links[(dst, cid)] = (src, act.conn_id)
                self.run(dst, acts)
                self.run(src, m.dial_succeeded(act.conn_id, act.host, self.now))
            elif isinstance(act, Send):
                other = self.links.get((src, act.conn_id))
                if other is None:
                    continue
                if other[0] in self.down or frozenset((src, other[0])) in self.cut:
                    self.unacked.setdefault((src, act.conn_id), self.now)
                    continue
                self.unacked.pop((src, act.conn_id), None)
                if other[0] in self.hung:
                    continue   # its kernel acknowledges; its router reads nothing
                self.run(other[0], self.meshes[other[0]].data_received(other[1], act.data, self.now))
            elif isinstance(act, Patience):
                (self.patient.add if act.patient else self.patient.discard)((src, act.conn_id))
            elif isinstance(act, Close):
                other = self.links.pop((src, act.conn_id), None)
                if other is not None:
                    self.links.pop(other, None)
                    if other[0] not in self.down:
                        self.run(other[0], self.meshes[other[0]].connection_lost(other[1], "EOF", self.now))

    def kill(self, m: Mesh) -> None:
        """SIGKILL with FIN: peers see EOF at once."""
        addr = self.addr_of(m)
        self.down.add(addr)
        for (a, cid), (b, ocid) in list(self.links.items()):
            if a == addr:
                self.links.pop((a, cid), None)
                self.links.pop((b, ocid), None)
                self.run(b, self.meshes[b].connection_lost(ocid, "EOF", self.now))
        self._deliver()

    def step(self, dt: float = 0.05) -> None:
        self.now += dt
        self.kernel_timeouts()
        for addr, m in self.meshes.items():
            if addr not in self.down and addr not in self.hung:
                self.run(addr, m.tick(self.now))
        self._deliver()

    def kernel_timeouts(self) -> None:
        """Connections whose sends went unacknowledged for their mesh's tcp_user_timeout, or whose keepalive
        probes went unanswered (module comment), end (ETIMEDOUT)."""
        for (addr, cid), since in list(self.unacked.items()):
            if addr in self.down or (addr, cid) not in self.links:
                del self.unacked[(addr, cid)]
            elif self.now - since > self.user_timeout(addr, cid):
                self._timed_out(addr, cid)
        for (addr, cid), (other, _) in list(self.links.items()):
            if addr in self.down or (addr, cid) not in self.links:
                continue
            if other not in self.down and frozenset((addr, other)) not in self.cut:
                self.heard[(addr, cid)] = self.now   # (a hung router's kernel answers too)
                continue
            since = self.heard.setdefault((addr, cid), self.now)
            if self.now - since > self.meshes[addr].config.tcp_keepalive + max(1.0, self.user_timeout(addr, cid)):
                self._timed_out(addr, cid)

    def user_timeout(self, addr: str, cid: int) -> float:
        """The socket's user timeout, as the adapter sets it (set_patience)."""
        cfg = self.meshes[addr].config
        return cfg.tcp_user_timeout_patient if (addr, cid) in self.patient else cfg.tcp_user_timeout

    def _timed_out(self, addr: str, cid: int) -> None:
        self.unacked.pop((addr, cid), None)
        self.heard.pop((addr, cid), None)
        self.patient.discard((addr, cid))
        self.links.pop((addr, cid))   # the other end hears nothing: its own kernel times out too
        self.run(addr, self.meshes[addr].connection_lost(cid, "connection timed out", self.now, link_failed=True))

    def advance(self, seconds: float, dt: float = 0.05) -> None:
        for _ in range(int(round(seconds / dt))):
            self.step(dt)

    def until(self, cond, timeout: float, dt: float = 0.05) -> float:
        start = self.now
        while self.now - start < timeout:
            if cond():
                return self.now - start
            self.step(dt)
        raise AssertionError(f"condition not met within {timeout}s of simulated time")


def full_mesh(net: SimNet, n: int | None = None) -> bool:
    live = [m for a, m in net.meshes.items() if a not in net.down]
    n = len(live) if n is None else n
    for m in live:
        r = m.report(net.now)
        if len(r["peers"]) != n:
            return False
        if sum(1 for c in r["connections"] if c["state"] == "established") != n - 1:
            return False
        if len(m.routes.unicast) != n - 1 or any(d != h for d, h in m.routes.unicast.items()):
            return False
    return True
