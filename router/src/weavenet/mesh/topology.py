"""Gossiped topology: one versioned entry per peer, owned and bumped only by that peer.

An entry is ordered by (incarnation, version): incarnation is the owner's start time, so a restarted
peer's entries win over its previous life's; version counts the owner's changes. Merge keeps the
greater, so gossip converges whatever the order of arrival and never goes backwards.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from .errors import ProtocolError
from .names import parse_peer_name


@dataclass(frozen=True)
class ConnRecord:
    name: str         # remote peer name
    address: str      # remote peer's dialable address (its IP and listen port)
    outbound: bool
    established: bool


@dataclass(frozen=True)
class PeerEntry:
    name: str
    nickname: str
    uid: int
    incarnation: int
    version: int
    connections: tuple[ConnRecord, ...] = field(default=())

    @property
    def order(self) -> tuple[int, int]:
        return (self.incarnation, self.version)

    def to_wire(self) -> list:
        return [self.name, self.nickname, self.uid, self.incarnation, self.version,
                [[c.name, c.address, int(c.outbound), int(c.established)] for c in self.connections]]

    @functools.cached_property
    def wire_json(self) -> bytes:
        """Encoded once per entry version; gossip re-sends the same entry to many neighbours."""
        return json.dumps(self.to_wire(), separators=(",", ":")).encode()

    @classmethod
    def from_wire(cls, w: object) -> PeerEntry:
        try:
            name, nick, uid, inc, ver, conns = w  # type: ignore[misc]
            return cls(parse_peer_name(name), str(nick), int(uid), int(inc), int(ver),
                       tuple(ConnRecord(parse_peer_name(c[0]), str(c[1]), bool(c[2]), bool(c[3]))
                             for c in conns))
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as e:
            raise ProtocolError(f"bad topology entry: {e}") from None


class Topology:
    def __init__(self, ourself: PeerEntry) -> None:
        self.ourname = ourself.name
        self.peers: dict[str, PeerEntry] = {ourself.name: ourself}
        # Highest order ever seen per name: an entry dropped as unreachable cannot come back older.
        self._seen: dict[str, tuple[int, int]] = {ourself.name: ourself.order}

    @property
    def ourself(self) -> PeerEntry:
        return self.peers[self.ourname]

    def set_ourself(self, entry: PeerEntry) -> None:
        self.peers[self.ourname] = entry
        self._seen[self.ourname] = entry.order

    def merge(self, entries: list[PeerEntry]) -> list[PeerEntry]:
        """Apply received entries; return those that were new to us (to be gossiped on)."""
        accepted = []
        for e in entries:
            if e.name == self.ourname:
                continue  # only we speak for ourselves
            if e.order <= self._seen.get(e.name, (-1, -1)):
                continue
            self.peers[e.name] = e
            self._seen[e.name] = e.order
            accepted.append(e)
        return accepted

    def merge_wire(self, wire: list) -> list[PeerEntry]:
        """Like merge, but only fully decodes entries that are newer than ours (most are not)."""
        fresh = []
        for w in wire:
            try:
                name, order = w[0], (int(w[3]), int(w[4]))
            except (TypeError, ValueError, IndexError, KeyError, OverflowError):
                raise ProtocolError("bad topology entry") from None
            if not isinstance(name, str):
                raise ProtocolError("bad topology entry: peer name is not a string")
            if name != self.ourname and order > self._seen.get(name, (-1, -1)):
                fresh.append(PeerEntry.from_wire(w))
        return self.merge(fresh)

    def symmetric_neighbours(self) -> dict[str, list[str]]:
        """Adjacency over connections that both ends report as established."""
        edges = {(name, c.name) for name, e in self.peers.items() for c in e.connections if c.established}
        adj: dict[str, list[str]] = {n: [] for n in self.peers}
        for a, b in edges:
            if (b, a) in edges:
                adj[a].append(b)
        for v in adj.values():
            v.sort()
        return adj

    def garbage_collect(self, reachable: set[str]) -> list[str]:
        """Forget peers we can no longer reach; returns their names."""
        gone = [n for n in self.peers if n not in reachable and n != self.ourname]
        for n in gone:
            del self.peers[n]
        return gone
