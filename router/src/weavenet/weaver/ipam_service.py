"""asyncio adapter for the IPAM allocator: a channel of the gossip layer, waiting callers, persistence.

Runs on the event loop (the allocator is pure and fast). The state file is written after every call
that changed it and *before* that call's messages leave, so a crash never forgets space or a claim
that other routers have already heard of.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path

from ..ipam import Allocated, Allocator, AllocFailed, ClaimRefused, GossipChanged, RingConflict, SendTo
from ..ipam.allocator import GOSSIP_INTERVAL
from ..ipam.init import IpamInit
from ..ipam.status import format_ipam_status
from ..mesh.core import Mesh
from ..mesh.errors import ProtocolError
from ..mesh.events import ConnectionDown, ConnectionUp, PeersChanged
from ..mesh.gossip import Gossiper, GossipSend, SendHandle
from ..mesh.grid import due_after
from .state import load_ipam_text, write_atomic

log = logging.getLogger("weavenet.ipam")

CHANNEL = "ipam"
ALLOCATE_TIMEOUT = 30.0   # a router with no space waits for a donation; a caller does not wait forever
TICK_INTERVAL = 1.0
LOG_EVERY = 60.0          # at most one warning per sender this often: a flood of bad messages is counted, not logged


class IpamService:
    def __init__(self, mesh: Mesh, state_file: Path, network: ipaddress.IPv4Network,
                 default_subnet: ipaddress.IPv4Network | None, init: IpamInit,
                 on_claim_refused: Callable[[str, str, str], None]) -> None:
        self.us = mesh.identity.name   # (the mesh itself is not kept: events tell this service what it needs)
        self.state_file = state_file
        self.on_claim_refused = on_claim_refused
        us = mesh.identity.name
        self.alloc = self._load(us, network, default_subnet, init)
        self._saved = self.alloc.to_json()
        self._waiters: dict[tuple[str, ipaddress.IPv4Network], list[asyncio.Future]] = {}
        self._reachable: frozenset[str] = frozenset()
        self._live: dict[str, int] = {}      # peer -> its connections (from ConnectionUp/Down)
        self._send: SendHandle | None = None
        self._next_tick = 0.0
        self._conflict_logged: set[str] = set()
        self._logged: dict[str, float] = {}   # sender -> when we last logged a bad message of it
        self.counters: dict[str, int] = {"malformed": 0, "conflict": 0}

    def _load(self, us: str, network, default_subnet, init: IpamInit) -> Allocator:
        text = load_ipam_text(self.state_file)   # StateError (one line) if corrupt
        if text is None:
            return Allocator(us, network, default_subnet, init=init)
        return Allocator.from_json(text, us, network, default_subnet, init=init)  # ValueError: one line

    # --- plumbing ----------------------------------------------------------------------------------
    def _persist(self) -> None:
        text = self.alloc.to_json()
        if text != self._saved:
            write_atomic(self.state_file, text + "\n")
            self._saved = text

    def _execute(self, actions: list) -> list[GossipSend]:
        self._persist()
        out: list[GossipSend] = []
        for a in actions:
            if isinstance(a, SendTo):
                out.append(GossipSend(CHANNEL, a.data, a.peer))
            elif isinstance(a, GossipChanged):
                out.append(GossipSend(CHANNEL, self.alloc.encode_gossip()))
            elif isinstance(a, Allocated):
                self._resolve((a.container_id, a.subnet), result=a.address)
            elif isinstance(a, AllocFailed):
                self._resolve((a.container_id, a.subnet), error=ValueError(a.reason))
            elif isinstance(a, ClaimRefused):
                log.warning("address %s of container %s: %s; detaching it", a.address, a.container_id[:12],
                            a.reason)
                self.on_claim_refused(a.container_id, str(a.address), a.reason)
        return out

    def _resolve(self, key, result=None, error: Exception | None = None) -> None:
        for fut in self._waiters.pop(key, []):
            if not fut.done():
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(result)

    # --- the gossip channel (full state to new neighbours and as anti-entropy: the gossip layer's) ------
    def attach(self, gossip: Gossiper) -> None:
        self._send = gossip.register(CHANNEL, self, GOSSIP_INTERVAL)

    def full_state(self) -> bytes:
        return self.alloc.encode_gossip()

    def merge(self, src: str, payload: bytes, now: float) -> bytes | None:
        """A changed ring is passed on whole; answers to one router leave through the send handle."""
        delta = None
        for out in self.on_message(src, payload, now):
            if out.dest is None:
                delta = out.payload
            elif self._send is not None:
                self._send(out.payload, out.dest)
        return delta

    def on_message(self, src: str, payload: bytes, now: float) -> list[GossipSend]:
        """`src`: the sender the mesh authenticated; the payload is hostile until the allocator checked it.
        A bad message is counted and logged here, and the connection kept (the data plane needs it)."""
        try:
            return self._execute(self.alloc.receive(payload, now, src))
        except RingConflict as e:
            # Merging would risk duplicates; keep the connection (the data plane needs it), say it once.
            self.counters["conflict"] += 1
            if src not in self._conflict_logged and len(self._conflict_logged) < 4096:
                log.error("IPAM ring of %s cannot be merged with ours: %s", src, e)
                self._conflict_logged.add(src)
            return []
        except ProtocolError as e:
            self.counters["malformed"] += 1
            if now - self._logged.get(src, -LOG_EVERY) >= LOG_EVERY:
                if len(self._logged) >= 4096:
                    self._logged.clear()
                self._logged[src] = now
                log.warning("bad IPAM message from %s: %s (further ones counted for %.0fs)", src, e, LOG_EVERY)
            return []

    def refused(self) -> dict[str, int]:
        """Messages (or ring entries) refused, per reason: malformed, conflict and the allocator's own rules."""
        return {**{k: v for k, v in self.counters.items() if v}, **self.alloc.refused}

    # --- mesh events ----------------------------------------------------------------------------
    def peers_changed(self, ev: PeersChanged, now: float) -> list[GossipSend]:
        self._reachable = ev.reachable
        return self._execute(self.alloc.peers_changed(set(ev.neighbours), set(ev.reachable), now))

    def connection_changed(self, ev: ConnectionUp | ConnectionDown) -> None:
        """Connected peers, for rmpeer's refusal (a peer with a connection is not gone)."""
        n = self._live.get(ev.peer, 0) + (1 if isinstance(ev, ConnectionUp) else -1)
        if n > 0:
            self._live[ev.peer] = n
        else:
            self._live.pop(ev.peer, None)

    def next_deadline(self) -> float:
        """When `tick` next has work: the router's ticker sleeps until then."""
        return self._next_tick

    def tick(self, now: float) -> list[GossipSend]:
        if now < self._next_tick:
            return []
        self._next_tick = due_after(now, TICK_INTERVAL)
        return self._execute(self.alloc.tick(now))

    # --- operations (on the loop; the router executes the returned actions) ----------------------
    async def allocate(self, container_id: str, subnet: ipaddress.IPv4Network | None, now: float,
                       execute: Callable[[list[GossipSend]], None]) -> ipaddress.IPv4Interface:
        addr, actions = self.alloc.allocate(container_id, subnet, now)
        execute(self._execute(actions))
        if addr is not None:
            return addr
        net = subnet or self.alloc.default_subnet
        fut = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((container_id, net), []).append(fut)
        try:
            return await asyncio.wait_for(fut, ALLOCATE_TIMEOUT)
        except TimeoutError:
            self.alloc.cancel(container_id, net)
            raise ValueError(f"no address in {net} within {ALLOCATE_TIMEOUT:.0f}s: no reachable router has "
                             "free space (is the mesh partitioned?)") from None

    def claim(self, container_id: str, iface: ipaddress.IPv4Interface, now: float
              ) -> tuple[bool, list[GossipSend]]:
        """Record an explicit address; (newly recorded, actions). ValueError if another container has it."""
        new = iface not in self.alloc.lookup(container_id)
        _, actions = self.alloc.claim(container_id, iface, now)
        return new, self._execute(actions)

    def release(self, container_id: str, address: str | None, now: float) -> list[GossipSend]:
        ip = ipaddress.IPv4Interface(address).ip if address else None
        _, actions = self.alloc.release(container_id, ip, now)
        return self._execute(actions)

    def rmpeer(self, peer: str, now: float) -> tuple[int, list[GossipSend]]:
        n, actions = self.alloc.rmpeer(peer, set(self._live), now)
        return n, self._execute(actions)

    def owned(self, address: str) -> bool:
        """Is this address in the allocation range (so IPAM tracks it)?"""
        return ipaddress.IPv4Interface(address).ip in self.alloc.network

    def status_text(self, nicknames: dict[str, str]) -> str:
        return format_ipam_status(self.alloc.status(), self.us, nicknames, set(self._reachable))

    def report(self) -> dict:
        return {**self.alloc.status(), "allocations": self.alloc.allocations(), "refused": self.refused()}
