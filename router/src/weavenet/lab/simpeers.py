"""Many simulated peers in one process, for measuring what one real router pays per peer.

Each simulated peer is a real sans-I/O ``Mesh`` with its own identity (name, uid, password), its own
listening address and real TCP: the router under test does the real handshake, heartbeats and gossip
with every one of them. The peers do not connect to each other (that would cost the sim process
O(N²) connections): the router sees a star, so its topology holds N small entries instead of a full
mesh's N entries of N connections each. Discovery is off in the simulated peers. In a full mesh each
peer sends its anti-entropy summary to one random neighbour of N-1, so the router gets one every
``summary_interval`` on average: each simulated peer (whose only neighbour is the router) sends its
summaries N-1 times less often, or the star would bury the router under N-1 times the real rate.

What the simulated peers save, so that one process can play hundreds of them (at 400 peers the process
was the bottleneck: 64 s of CPU in 120 s, every peer repeating the same work on the same bytes): the
router sends every peer the same gossip, so a message body is decoded once and the (read-only) result
shared by the peers that get the same bytes (``SharedDecode``); and each peer recomputes its routes at
most once a second (``SimMesh``: in a star they are trivial, everything goes through the router, and
nothing the router sees depends on them, except that a peer forgets an unreachable one up to a second
later). Everything on the wire (handshake, heartbeats, gossip, summaries and their answers) is the real
Mesh's, per peer. A simulation can also be spread over several processes (``--first``, ``--mesh-size``:
bench/peer_cost ``--sim-procs``), so that the simulator gets more than one share of a busy machine.

Run as a child process (``python -m weavenet.lab.simpeers``) in a namespace that owns the addresses;
it takes commands on stdin and answers with one JSON object per line on stdout:

    {"event": "ready", "peers": [{"name": ..., "address": ...}, ...]}   once every peer listens
    stats             -> {"event": "stats", "bytes_in": .., "bytes_out": .., "established": .., "cpu_s": ..}
    silence I         -> peer I stops reading, writing and ticking, its sockets stay open and its address
                         answers nothing (nft drop: a frozen host, whose kernel does not acknowledge either)
    close I           -> peer I closes its connections and its listener (a stopped router)
    quit
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

from ..mesh import core as _core
from ..mesh.core import Action, Close, Dial, Mesh, MeshConfig, Patience, Send
from ..mesh.crypto import password_digest
from ..mesh.handshake import LocalIdentity
from ..mesh.names import format_address
from ..weaver.peer_transport import apply_patience, tune_peer_socket

TICK = 0.1          # as the router's ticker
DIAL_TIMEOUT = 5.0
RECOMPUTE_INTERVAL = 1.0   # a simulated peer's routes (a star: all via the router) at most this often
SHARED_MIN = 256           # bodies shorter than this are decoded by each peer (cheaper than the lookup)


class SharedDecode:
    """``channel.decode_json`` for the whole process, remembering the last few big bodies: every simulated
    peer gets the same gossip from the router, and the Mesh only reads what it decoded (never mutates it)."""

    def __init__(self, decode, size: int = 64) -> None:
        self._decode, self._size = decode, size
        self._cache: dict[bytes, object] = {}
        self.hits = self.misses = 0

    def __call__(self, body: bytes, *args, **kw) -> object:
        if len(body) < SHARED_MIN or args or kw:
            return self._decode(body, *args, **kw)
        hit = self._cache.get(body)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        out = self._decode(body)   # a ProtocolError is raised for every peer, as it would be
        if len(self._cache) >= self._size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[body] = out
        return out


class SimMesh(Mesh):
    """A real Mesh whose route recomputation is rate-limited (see the module docstring)."""

    _next_recompute = 0.0

    def _recompute(self, now: float) -> list:
        if now < self._next_recompute:
            return []            # still dirty: the next tick after the interval recomputes
        self._next_recompute = now + RECOMPUTE_INTERVAL
        return super()._recompute(now)


def sim_name(i: int) -> str:
    """Peer names of the simulation: locally administered MACs, distinct per index."""
    return f"5e:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


@dataclass
class SimPeer:
    index: int
    ip: str
    port: int
    mesh: Mesh
    state: str = "running"          # running | silent | closed
    transports: dict[int, asyncio.Transport] = field(default_factory=dict)
    server: asyncio.base_events.Server | None = None


class SimProtocol(asyncio.Protocol):
    def __init__(self, sim: SimPeers, peer: SimPeer, conn_id: int | None = None) -> None:
        self.sim, self.peer, self.conn_id = sim, peer, conn_id

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.peer.state != "running":
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune_peer_socket(sock, self.peer.mesh.config)   # as the router's adapter
        ip, port = transport.get_extra_info("peername")[:2]
        now = time.monotonic()
        if self.conn_id is None:
            self.conn_id, actions = self.peer.mesh.accept(ip, port, now)
        else:
            actions = self.peer.mesh.dial_succeeded(self.conn_id, ip, now)
        self.peer.transports[self.conn_id] = transport
        self.sim.execute(self.peer, actions)

    def data_received(self, data: bytes) -> None:
        if self.peer.state != "running" or self.conn_id is None:
            return
        self.sim.bytes_in += len(data)
        self.sim.execute(self.peer, self.peer.mesh.data_received(self.conn_id, data, time.monotonic()))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn_id is None or self.peer.state != "running":
            return
        self.peer.transports.pop(self.conn_id, None)
        self.sim.execute(self.peer, self.peer.mesh.connection_lost(self.conn_id, "connection closed", time.monotonic()))


class SimPeers:
    """``ips[i]`` is peer i's address (listening on ``port``); peers in ``dialers`` dial the router."""

    def __init__(self, ips: list[str], port: int, router: str, dialers: set[int], password: str | None,
                 seed: int = 1, first: int = 0, mesh_size: int | None = None) -> None:
        self.router, self.dialers = router, dialers
        digest = password_digest(password) if password else None
        rng = random.Random(seed)
        incarnation = time.time_ns() // 1_000_000
        self.peers = []
        for i, ip in enumerate(ips):
            # ``first``: this process plays peers first+1... of a simulation spread over several processes.
            ident = LocalIdentity(sim_name(first + i + 1), f"sim{first + i + 1}", rng.getrandbits(63), port)
            cfg = MeshConfig(password_hash=digest, discovery=False)
            cfg.summary_interval *= mesh_size or len(ips)  # the full-mesh rate at the router (module docstring)
            mesh = SimMesh(ident, incarnation, cfg, random.Random(rng.random()))
            self._count_topology(mesh)
            self.peers.append(SimPeer(i, ip, port, mesh))
        self.bytes_in = self.bytes_out = 0
        self.topology_bytes_in = 0   # bodies of GOSSIP, GOSSIP_DELTA and SUMMARY messages from the router
        self.topology_bytes_by_kind = {"_on_gossip": 0, "_on_delta": 0, "_on_summary": 0}
        self.whole_entries = {"router": 0, "peers": 0}   # whole entries received (GOSSIP), by whose they are
        self.tick_errors = 0
        self._tasks: set[asyncio.Task] = set()

    def _count_topology(self, mesh: Mesh) -> None:
        """Count the topology gossip the peers receive (the bench tells it apart from other traffic, e.g.
        the health channel's summaries) by wrapping the mesh's handlers of those messages."""
        for attr in ("_on_gossip", "_on_delta", "_on_summary"):
            handler = getattr(mesh, attr)

            def counted(conn, body, *rest, _handler=handler, _kind=attr):
                self.topology_bytes_in += len(body)
                self.topology_bytes_by_kind[_kind] += len(body)
                if _kind == "_on_gossip":   # whose whole entries they are: the router's, or the other peers'
                    msg = _core.decode_json(body)
                    for w in msg.get("peers", ()) if isinstance(msg, dict) else ():
                        ours = isinstance(w, list) and w and isinstance(w[0], str) and w[0].startswith("5e:")
                        self.whole_entries["peers" if ours else "router"] += 1
                return _handler(conn, body, *rest)
            setattr(mesh, attr, counted)

    def execute(self, peer: SimPeer, actions: list[Action]) -> None:
        if peer.state != "running":
            return
        for a in actions:
            if isinstance(a, Send):
                t = peer.transports.get(a.conn_id)
                if t is not None and not t.is_closing():
                    self.bytes_out += len(a.data)
                    t.write(a.data)
            elif isinstance(a, Close):
                t = peer.transports.pop(a.conn_id, None)
                if t is not None:
                    t.close()
            elif isinstance(a, Patience):
                apply_patience(peer.transports.get(a.conn_id), peer.mesh.config, a.patient)
            elif isinstance(a, Dial):
                task = asyncio.get_running_loop().create_task(self._dial(peer, a))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _dial(self, peer: SimPeer, a: Dial) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: SimProtocol(self, peer, a.conn_id), a.host,
                                                          a.port, local_addr=(peer.ip, 0)), DIAL_TIMEOUT)
        except (TimeoutError, OSError) as e:
            self.execute(peer, peer.mesh.dial_failed(a.conn_id, str(e) or "timed out", time.monotonic()))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        for p in self.peers:
            p.server = await loop.create_server(lambda p=p: SimProtocol(self, p), host=p.ip, port=p.port,
                                                reuse_address=True, backlog=64)
        for p in self.peers:
            if p.index in self.dialers:
                self.execute(p, p.mesh.connect([self.router], now))
        task = loop.create_task(self._ticker())
        self._tasks.add(task)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for p in self.peers:
                if p.state == "running":
                    try:
                        self.execute(p, p.mesh.tick(now))
                    except Exception:  # noqa: BLE001 - one peer's bug must not stop every peer's heartbeats
                        self.tick_errors += 1
                        if self.tick_errors <= 3:
                            traceback.print_exc(file=sys.stderr)

    def stats(self) -> dict:
        established = sum(1 for p in self.peers if p.state == "running"
                          and any(c.state == "established" for c in p.mesh.live_connections()))
        t = os.times()
        return {"event": "stats", "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "topology_bytes_in": self.topology_bytes_in, "topology_bytes_by_kind": self.topology_bytes_by_kind,
                "whole_entries": self.whole_entries,
                "gaps": sum(p.mesh.counters["gossip_delta_gaps"] for p in self.peers),
                "established": established, "cpu_s": round(t.user + t.system, 3), "tick_errors": self.tick_errors,
                "gossip_received": sum(p.mesh.counters["gossip_received"] for p in self.peers),
                "shared_decodes": [_core.decode_json.hits, _core.decode_json.misses]
                if isinstance(_core.decode_json, SharedDecode) else None}

    def silence(self, i: int) -> None:
        """A frozen host: nothing is read or sent any more, no socket is closed, and (as its kernel is frozen
        too) nothing addressed to it is acknowledged: its address's packets are dropped in this namespace
        (nft; without the rights for that, only the simulated router freezes and its kernel still answers)."""
        p = self.peers[i]
        p.state = "silent"
        rules = (f"add table ip simfreeze\n"
                 f"add chain ip simfreeze in {{ type filter hook input priority -300; }}\n"
                 f"add chain ip simfreeze out {{ type filter hook output priority -300; }}\n"
                 f"add rule ip simfreeze in ip daddr {p.ip} drop\n"
                 f"add rule ip simfreeze out ip saddr {p.ip} drop\n")
        try:
            subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as e:
            print(f"simpeers: cannot drop {p.ip}'s packets ({e}): its kernel still answers", file=sys.stderr)
        for t in p.transports.values():
            t.pause_reading()
        if p.server is not None:
            p.server.close()

    def close(self, i: int) -> None:
        p = self.peers[i]
        self.execute(p, p.mesh.shutdown())
        p.state = "closed"
        for t in p.transports.values():
            t.close()
        if p.server is not None:
            p.server.close()

    def command(self, line: str) -> dict | None:
        words = line.split()
        if not words:
            return None
        if words[0] == "stats":
            return self.stats()
        if words[0] in ("silence", "close") and len(words) == 2:
            (self.silence if words[0] == "silence" else self.close)(int(words[1]))
            return {"event": "done", "at": time.monotonic()}
        return {"event": "error", "error": f"unknown command {line.strip()!r}"}


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace) -> None:
    _core.decode_json = SharedDecode(_core.decode_json)   # this process only plays peers (see SharedDecode)
    ips = args.ips.split(",")
    dialers = set(range(0, len(ips), 2)) if args.dial == "half" else set(range(len(ips))) if args.dial == "all" \
        else set()
    sim = SimPeers(ips, args.port, args.router, dialers, os.environ.get("WEAVE_PASSWORD") or None,
                   seed=1 + args.first, first=args.first, mesh_size=args.mesh_size)
    await sim.start()
    _emit({"event": "ready", "peers": [{"name": p.mesh.identity.name, "address": format_address(p.ip, p.port)}
                                       for p in sim.peers]})
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:  # commands arrive on a thread; the peers are only touched on the loop
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, "quit")
    threading.Thread(target=read_stdin, daemon=True).start()
    while (line := await lines.get()).strip() != "quit":
        reply = sim.command(line)
        if reply is not None:
            _emit(reply)


def main() -> None:
    p = argparse.ArgumentParser(description="simulated mesh peers (see the module docstring)")
    p.add_argument("--ips", required=True, help="comma-separated addresses, one per peer")
    p.add_argument("--port", type=int, default=6783)
    p.add_argument("--router", required=True, help="host:port of the router under test")
    p.add_argument("--dial", choices=("none", "half", "all"), default="half",
                   help="which peers dial the router (the others wait to be dialled)")
    p.add_argument("--first", type=int, default=0, help="index of the first peer (several processes: names differ)")
    p.add_argument("--mesh-size", type=int, default=None,
                   help="peers in the whole simulation (several processes; default: this process's)")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
