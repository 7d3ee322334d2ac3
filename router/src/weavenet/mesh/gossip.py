"""One gossip layer for every application channel (IPAM's ring, DNS records), like weaveworks/mesh's
Gossiper: a channel says what its whole state is and how to merge what a peer sent; this layer does the
rest for all of them alike — a new neighbour gets every channel's full state once, what a merge learnt
is passed on to the neighbours, and every few seconds each channel's full state goes to one random
neighbour (anti-entropy: whatever a lost message missed is repaired).

What a merge learnt goes to our neighbours except the sender and the sender's own neighbours: the sender
passes on (or, as the origin, sends) what it learnt to all of its neighbours but those of ITS sender, so a
common neighbour has it already. In a full mesh a change then costs N messages, not N^2 (every router
re-sending it to every other). Every router still gets it: along a shortest path from the origin, the first
router on the first-receipt chain that is adjacent to the next hop sends it there. A neighbour whose link
the topology shows before the sender saw it gets the sender's full state as a new neighbour; anything a
stale view still misses, anti-entropy repairs.

Sans I/O: driven by the mesh's events (PeersChanged's neighbours, RoutesChanged's adjacency, AppMessage)
and by `tick`, it returns `GossipSend` requests that the dispatcher turns into ``Mesh.send_app``. Topology
gossip is not a channel here: it has its own message types, rate limit, broadcast trees and summary pull
(see the README).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from .grid import due_after

DEFAULT_INTERVAL = 10.0   # seconds between anti-entropy rounds of a channel (jittered ±50 %)


@dataclass(frozen=True)
class GossipSend:
    """Send `payload` on the application channel: to `dest` (routed by name), or None: every neighbour but
    those in `exclude`."""
    channel: str
    payload: bytes
    dest: str | None = None
    exclude: frozenset[str] = frozenset()


class GossipChannel(Protocol):
    """What a channel implements. Optional hooks: ``on_neighbour_up(peer, now)``, ``on_neighbour_down(peer,
    now)`` (called when the mesh's neighbours change, before the new ones are sent the full state), and
    ``digest()``: what an anti-entropy round sends instead of the full state (e.g. the versions held, which
    the neighbour's merge answers with what we lack through its send handle: O(N) bytes, not the state)."""

    def full_state(self) -> bytes | None:
        """Everything this router knows on the channel (None: nothing worth sending)."""

    def merge(self, src: str, payload: bytes, now: float) -> bytes | None:
        """Apply a message from `src` (authenticated by the mesh; the payload is hostile). Returns what
        changed here, to pass on to every neighbour, or None. Raises ProtocolError for a message that
        breaks the protocol: the connection it came on is closed (and counted), nothing else."""


SendHandle = Callable[[bytes, "str | None"], None]


@dataclass
class _Registered:
    channel: GossipChannel
    interval: float
    next_sync: float | None = None


class Gossiper:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._channels: dict[str, _Registered] = {}
        self._neighbours: frozenset[str] = frozenset()
        self._adj: Mapping[str, Collection[str]] = {}   # every peer's neighbours (RoutesChanged)
        self._outbox: list[GossipSend] = []

    def register(self, name: str, channel: GossipChannel, interval: float = DEFAULT_INTERVAL) -> SendHandle:
        """Plug a channel in. Returns its send handle, ``send(payload, dest=None)``, for messages a merge
        needs to send besides its delta (e.g. IPAM's answers to one router): they leave with the result
        of the gossiper call in progress."""
        if name in self._channels:
            raise ValueError(f"gossip channel {name!r} registered twice")
        self._channels[name] = _Registered(channel, interval)

        def send(payload: bytes, dest: str | None = None) -> None:
            self._outbox.append(GossipSend(name, payload, dest))
        return send

    def handles(self, channel: str) -> bool:
        return channel in self._channels

    @property
    def neighbours(self) -> frozenset[str]:
        return self._neighbours

    def _take(self, out: list[GossipSend]) -> list[GossipSend]:
        queued, self._outbox = self._outbox, []
        return out + queued

    def neighbours_changed(self, neighbours: frozenset[str], now: float) -> list[GossipSend]:
        """From PeersChanged: each new neighbour gets every channel's full state, once."""
        new, gone = sorted(neighbours - self._neighbours), sorted(self._neighbours - neighbours)
        self._neighbours = frozenset(neighbours)
        out: list[GossipSend] = []
        for name, reg in self._channels.items():
            for hook, peers in (("on_neighbour_down", gone), ("on_neighbour_up", new)):
                fn = getattr(reg.channel, hook, None)
                if fn is not None:
                    for p in peers:
                        fn(p, now)
            state = reg.channel.full_state() if new else None
            if state is not None:
                out += [GossipSend(name, state, p) for p in new]
        return self._take(out)

    def adjacency_changed(self, adj: Mapping[str, Collection[str]]) -> None:
        """From RoutesChanged: who is connected to whom (symmetric, established connections)."""
        self._adj = adj

    def message(self, channel: str, src: str, payload: bytes, now: float) -> list[GossipSend]:
        """An AppMessage on a registered channel: merged; what it taught us goes to every neighbour but the
        sender and the sender's neighbours (they have it from the sender: see the module's doc).
        ProtocolError (and a channel's bug) propagates: the caller closes the connection it came on."""
        reg = self._channels[channel]
        try:
            delta = reg.channel.merge(src, payload, now)
        except Exception:
            self._outbox.clear()   # nothing of a refused message leaves
            raise
        if delta is None:
            return self._take([])
        return self._take([GossipSend(channel, delta, None, frozenset(self._adj.get(src, ())) | {src})])

    def next_deadline(self) -> float:
        """When `tick` next has a round due (0.0: at once): the router's ticker sleeps until then."""
        return min((reg.next_sync or 0.0 for reg in self._channels.values()), default=float("inf"))

    def tick(self, now: float) -> list[GossipSend]:
        """Anti-entropy: each channel's full state (or digest) to one random neighbour every `interval` (±50 %)."""
        out: list[GossipSend] = []
        for name, reg in self._channels.items():
            if reg.next_sync is not None and now < reg.next_sync:
                continue
            reg.next_sync = due_after(now, reg.interval * self._rng.uniform(0.5, 1.5))
            if self._neighbours:
                digest = getattr(reg.channel, "digest", None)
                state = digest() if digest is not None else reg.channel.full_state()
                if state is not None:
                    out.append(GossipSend(name, state, self._rng.choice(sorted(self._neighbours))))
        return self._take(out)
