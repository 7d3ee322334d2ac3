"""Gossiped topology: one versioned entry per peer, owned and bumped only by that peer.

An entry is ordered by (incarnation, version): incarnation is the owner's start time, so a restarted
peer's entries win over its previous life's; version counts the owner's changes. Merge keeps the
greater, so gossip converges whatever the order of arrival and never goes backwards.
"""

from __future__ import annotations

import functools
import json
from collections import deque
from dataclasses import dataclass, field, replace

from .errors import ProtocolError
from .names import normalise_address, parse_peer_name

DEFAULT_MAX_PEERS = 1000
MAX_NICKNAME = 64
MAX_ADDRESS = 300                  # host name (253) + brackets + port
MAX_UID = 2**64 - 1
MAX_INCARNATION = 2**63 - 1
MAX_VERSION = 2**53 - 1            # exact as a JSON number everywhere
MAX_VERSION_JUMP = 1 << 20         # a million changes unseen within one incarnation is not a real peer
DAY_MS = 86_400_000                # incarnations are milliseconds: a day ahead of our clock is refused
HISTORY_VERSIONS = 16              # past versions kept per entry (see Topology.held)
HISTORY_RECORDS = 4                # ... holding at most this many times the current entry's records (+64)


@dataclass(frozen=True)
class ConnRecord:
    name: str         # remote peer name
    address: str      # remote peer's dialable address (its IP and listen port)
    outbound: bool
    established: bool


def _int(v: object, hi: int, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
        raise ValueError(f"{what} is not an integer in 0-{hi}")
    return v


def _flag(v: object, what: str) -> bool:
    if v not in (0, 1) or not isinstance(v, int):  # 0/1 (our encoding) or true/false
        raise ValueError(f"{what} is not 0 or 1")
    return bool(v)


def _name(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError("peer name is not a string")
    return parse_peer_name(v)


@functools.lru_cache(maxsize=1 << 15, typed=True)  # records recur in every round of gossip; typed: 1 is not 1.0
def _conn_record(name: object, address: object, outbound: object, established: object) -> ConnRecord:
    """A checked connection record (unhashable fields raise TypeError: refused like the rest)."""
    if not isinstance(address, str) or len(address) > MAX_ADDRESS:
        raise ValueError("connection address is not a string")
    return ConnRecord(_name(name), _address(address), _flag(outbound, "outbound"), _flag(established, "established"))


@functools.lru_cache(maxsize=4096)  # one address appears in the records of all of its peer's neighbours
def _address(v: str) -> str:
    return normalise_address(v)


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
    def established(self) -> frozenset[str]:
        """Peers this entry reports an established connection to (once per entry version)."""
        return frozenset(c.name for c in self.connections if c.established)

    @functools.cached_property
    def wire_json(self) -> bytes:
        """Encoded once per entry version; gossip re-sends the same entry to many neighbours."""
        return json.dumps(self.to_wire(), separators=(",", ":")).encode()

    @classmethod
    def from_wire(cls, w: object, max_conns: int = DEFAULT_MAX_PEERS) -> PeerEntry:
        """Decode and check every field (anything else is a ProtocolError): names, a printable nickname
        of at most 64 characters, integers in range, at most ``max_conns`` connection records, each
        with a valid peer address."""
        try:
            if not isinstance(w, list) or len(w) != 6:
                raise ValueError("not a list of 6 fields")
            name, nick, uid, inc, ver, conns = w
            name = _name(name)
            if not isinstance(nick, str) or len(nick) > MAX_NICKNAME or not nick.isprintable():
                raise ValueError(f"nickname is not a printable string of at most {MAX_NICKNAME} characters")
            if not isinstance(conns, list) or len(conns) > max_conns:
                raise ValueError(f"connections is not a list of at most {max_conns} records")
            if not all(type(c) is list and len(c) == 4 for c in conns):
                raise ValueError("connection record is not a list of 4 fields")
            recs = tuple([_conn_record(*c) for c in conns])
            if any(r.name == name for r in recs):
                raise ValueError("connection to itself")
            if len({r.name for r in recs}) != len(recs):  # deltas address records by peer name
                raise ValueError("two connection records to one peer")
            return cls(name, nick, _int(uid, MAX_UID, "uid"), _int(inc, MAX_INCARNATION, "incarnation"),
                       _int(ver, MAX_VERSION, "version"), recs)
        except (ValueError, TypeError) as e:
            raise ProtocolError(f"bad topology entry: {e}") from None


@dataclass(frozen=True)
class PeerDelta:
    """What changed in a peer's entry from version ``base`` to ``version`` (same incarnation): the
    connection records added or changed, and the peers whose records went. A join or a lost link then
    costs each neighbour one record, not the whole entry; it applies only to exactly ``base``."""
    name: str
    incarnation: int
    base: int
    version: int
    changed: tuple[ConnRecord, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def order(self) -> tuple[int, int]:
        return (self.incarnation, self.version)

    @property
    def size(self) -> int:
        """Records it carries (a removal counts as one)."""
        return len(self.changed) + len(self.removed)

    @classmethod
    def between(cls, old: PeerEntry, new: PeerEntry) -> PeerDelta | None:
        """The delta from ``old`` to ``new``; None when there is none (another incarnation, not newer)."""
        if (old.name, old.incarnation, old.nickname, old.uid) != (new.name, new.incarnation, new.nickname,
                                                                 new.uid) or old.version >= new.version:
            return None
        before = set(old.connections)
        changed = tuple(c for c in new.connections if c not in before)
        names = {c.name for c in new.connections}
        removed = tuple(sorted(c.name for c in old.connections if c.name not in names))
        return cls(new.name, new.incarnation, old.version, new.version, changed, removed)

    @classmethod
    def compose(cls, chain: list[PeerDelta]) -> PeerDelta:
        """One delta doing what the ``chain`` does (each step starts at or before the previous step's
        version, and ends after it): a record touched by several steps travels once, in its last state.
        Composed from complete deltas (see ``span`` in Topology.apply_deltas) it is complete too."""
        first, last = chain[0], chain[-1]
        final: dict[str, ConnRecord | None] = {}
        version = first.base
        for d in chain:
            if (d.name, d.incarnation) != (first.name, first.incarnation) or not d.base <= version < d.version:
                raise ValueError("not a chain: one entry's deltas, each from at most the version before it")
            version = d.version
            for n in d.removed:
                final[n] = None
            for c in d.changed:
                final[c.name] = c
        changed = tuple(c for _, c in sorted(final.items()) if c is not None)
        removed = tuple(sorted(n for n, c in final.items() if c is None))
        return cls(first.name, first.incarnation, first.base, last.version, changed, removed)

    def apply(self, old: PeerEntry, max_conns: int) -> PeerEntry:
        """The entry this delta makes of ``old`` (which has order (incarnation, base))."""
        recs = {c.name: c for c in old.connections}
        for n in self.removed:
            recs.pop(n, None)
        for c in self.changed:
            recs[c.name] = c
        if len(recs) > max_conns:
            raise ProtocolError(f"bad topology delta: {self.name} would have more than {max_conns} connections")
        return PeerEntry(old.name, old.nickname, old.uid, self.incarnation, self.version,
                         tuple(recs[n] for n in sorted(recs)))

    @functools.cached_property
    def wire_json(self) -> bytes:
        return json.dumps([self.name, self.incarnation, self.base, self.version,
                           [[c.name, c.address, int(c.outbound), int(c.established)] for c in self.changed],
                           list(self.removed)], separators=(",", ":")).encode()

    @classmethod
    def from_wire(cls, w: object, max_conns: int = DEFAULT_MAX_PEERS) -> PeerDelta:
        """Decode and check every field like PeerEntry.from_wire (ProtocolError otherwise); version
        must be above base, by at most MAX_VERSION_JUMP."""
        try:
            if not isinstance(w, list) or len(w) != 6:
                raise ValueError("not a list of 6 fields")
            name, inc, base, ver, changed, removed = w
            name = _name(name)
            inc, base = _int(inc, MAX_INCARNATION, "incarnation"), _int(base, MAX_VERSION, "base version")
            ver = _int(ver, MAX_VERSION, "version")
            if not base < ver <= base + MAX_VERSION_JUMP:
                raise ValueError("version is not above its base (by at most a million)")
            for what, v in (("changed", changed), ("removed", removed)):
                if not isinstance(v, list) or len(v) > max_conns:
                    raise ValueError(f"{what} is not a list of at most {max_conns} items")
            if not all(type(c) is list and len(c) == 4 for c in changed):
                raise ValueError("connection record is not a list of 4 fields")
            recs = tuple([_conn_record(*c) for c in changed])
            gone = tuple(_name(n) for n in removed)
            names = [r.name for r in recs] + list(gone)
            if name in names:
                raise ValueError("connection to itself")
            if len(set(names)) != len(names):
                raise ValueError("a peer named twice")
            return cls(name, inc, base, ver, recs, gone)
        except (ValueError, TypeError) as e:
            raise ProtocolError(f"bad topology delta: {e}") from None


class Topology:
    def __init__(self, ourself: PeerEntry, max_peers: int = DEFAULT_MAX_PEERS) -> None:
        self.ourname = ourself.name
        self.max_peers = max_peers
        self.peers: dict[str, PeerEntry] = {ourself.name: ourself}
        # Highest order ever seen per name: an entry dropped as unreachable cannot come back older.
        # Kept in recency order and bounded (names of peers long gone are forgotten first).
        self._seen: dict[str, tuple[int, int]] = {ourself.name: ourself.order}
        # Entries skipped (not errors of the message): topology full, or versions implausibly far ahead.
        self.refused = {"full": 0, "ahead": 0}
        self.reclaimed = 0  # times gossip claimed a newer entry of ours and we bumped past it
        # Recent past versions per entry (same incarnation as the current one, newest last): a delta based
        # on a version we held applies even if we moved on since (a summary answer racing other gossip),
        # and a summary naming one of them is answered with one delta, not the whole entry. Bounded in
        # versions and records; the records are shared with the entries, so this costs references.
        self._history: dict[str, deque[PeerEntry]] = {}
        # symmetric_neighbours' rows, kept up to date row by row: a stored entry changes its own row and
        # those of the peers it names (before and after), not all N (that was O(N^2) per recompute).
        self._sym: dict[str, list[str]] = {}
        self._sym_dirty: set[str] = {ourself.name}

    @property
    def ourself(self) -> PeerEntry:
        return self.peers[self.ourname]

    def set_ourself(self, entry: PeerEntry) -> None:
        self._store(entry)

    def _store(self, entry: PeerEntry) -> None:
        """Make ``entry`` the current one of its peer; the one it replaces goes to the history."""
        old = self.peers.get(entry.name)
        self.peers[entry.name] = entry
        if old is None or old.established != entry.established:
            self._sym_dirty.add(entry.name)
            self._sym_dirty.update(entry.established.symmetric_difference(old.established) if old
                                   else entry.established)
        self._remember(entry.name, entry.order)
        if old is None or old.incarnation != entry.incarnation or old.uid != entry.uid:
            self._history.pop(entry.name, None)
            return
        past = self._history.setdefault(entry.name, deque())
        past.append(old)
        budget = HISTORY_RECORDS * len(entry.connections) + 64
        total = sum(len(e.connections) for e in past)
        while past and (len(past) > HISTORY_VERSIONS or total > budget):
            total -= len(past.popleft().connections)

    def held(self, name: str, order: tuple[int, int]) -> PeerEntry | None:
        """The entry of ``name`` at ``order`` if it is the current one or one we held recently."""
        cur = self.peers.get(name)
        if cur is None or cur.order == order:
            return cur
        for e in self._history.get(name, ()):
            if e.order == order:
                return e
        return None

    def _remember(self, name: str, order: tuple[int, int]) -> None:
        self._seen.pop(name, None)
        self._seen[name] = order
        if len(self._seen) > 2 * self.max_peers + 64:
            keep = self.max_peers + 32
            for n in list(self._seen):
                if len(self._seen) <= keep:
                    break
                if n not in self.peers:
                    del self._seen[n]

    @staticmethod
    def plausible(order: tuple[int, int], known: tuple[int, int] | None, max_incarnation: int | None) -> bool:
        """False for an entry too far ahead: an incarnation (start time, ms) beyond ``max_incarnation``
        (our clock plus a day), or a version jump of more than MAX_VERSION_JUMP within the incarnation
        we know. Such an entry would win over every real one of its owner for good."""
        if max_incarnation is not None and order[0] > max_incarnation:
            return False
        return known is None or order[0] != known[0] or order[1] - known[1] <= MAX_VERSION_JUMP

    def merge(self, entries: list[PeerEntry], max_incarnation: int | None = None) -> list[PeerEntry]:
        """Apply received entries; return those that were new to us (to be gossiped on). An entry
        about ourselves newer than ours (our previous life's, or forged) makes us bump past it:
        only we speak for ourselves, and that is how we take our entry back."""
        accepted = []
        for e in entries:
            known = self._seen.get(e.name)
            if known is not None and e.order <= known:
                continue
            if not self.plausible(e.order, known, max_incarnation):
                self.refused["ahead"] += 1
                continue
            if e.name == self.ourname:
                accepted.append(self._reclaim(e.order))
                continue
            if e.name not in self.peers and len(self.peers) >= self.max_peers:
                self.refused["full"] += 1
                continue
            self._store(e)
            accepted.append(e)
        return accepted

    def _reclaim(self, claimed: tuple[int, int]) -> PeerEntry:
        inc, ver = claimed
        inc, ver = (inc, ver + 1) if ver < MAX_VERSION else (inc + 1, 1)
        self.reclaimed += 1
        new = replace(self.ourself, incarnation=inc, version=ver)
        self.set_ourself(new)
        return new

    def merge_wire(self, wire: object, max_incarnation: int | None = None) -> list[PeerEntry]:
        """Like merge, but from the wire. The message is refused (ProtocolError) if it is not a list of
        at most ``max_peers`` well-formed entries; only entries newer than ours are fully decoded
        (most are not), the others' names and orders are still checked."""
        if not isinstance(wire, list):
            raise ProtocolError("bad topology: not a list of entries")
        if len(wire) > self.max_peers:
            raise ProtocolError(f"bad topology: {len(wire)} entries exceed the limit of {self.max_peers} peers")
        fresh = []
        for w in wire:
            try:
                if not isinstance(w, list) or len(w) != 6:
                    raise ValueError("not a list of 6 fields")
                name = _name(w[0])
                order = (_int(w[3], MAX_INCARNATION, "incarnation"), _int(w[4], MAX_VERSION, "version"))
            except (ValueError, TypeError) as e:
                raise ProtocolError(f"bad topology entry: {e}") from None
            if order > self._seen.get(name, (-1, -1)):
                fresh.append(PeerEntry.from_wire(w, self.max_peers))
        return self.merge(fresh, max_incarnation)

    def apply_deltas(self, deltas: list[PeerDelta], max_incarnation: int | None = None, span: bool = False
                     ) -> tuple[list[tuple[PeerEntry, list[PeerDelta]]], int]:
        """Apply received deltas; return the entries they made, each with the chain of deltas that made
        it (to be passed on), and how many did not apply because we do not hold their base version (a
        gap: the caller pulls the whole entries). Consecutive deltas of one entry are applied together
        (one rebuild of the entry, not one per delta). A delta about ourselves newer than our entry
        makes us bump past it, as in merge (its chain is empty: the whole entry must go).

        ``span``: the sender's deltas are complete (they name every record changed at any version from
        base to version, as a chain of single steps and its composition do), so one applies to any version
        we hold in between: the records it does not name did not change there."""
        accepted: list[tuple[PeerEntry, list[PeerDelta]]] = []
        gaps = 0
        i = 0
        while i < len(deltas):
            name = deltas[i].name
            j = i
            while j < len(deltas) and deltas[j].name == name:
                j += 1
            run, i = deltas[i:j], j
            if name == self.ourname:
                top = max(run, key=lambda d: d.order)
                known = self._seen.get(name)
                if known is not None and top.order <= known:
                    continue
                if not self.plausible(top.order, known, max_incarnation):
                    self.refused["ahead"] += 1
                    continue
                accepted.append((self._reclaim(top.order), []))
                continue
            cur = self.peers.get(name)
            recs: dict[str, ConnRecord] | None = None
            chain: list[PeerDelta] = []
            order = cur.order if cur is not None else None
            for d in run:
                known = self._seen.get(name)
                if known is not None and d.order <= known or order is not None and d.order <= order:
                    continue   # stale
                if not self.plausible(d.order, known, max_incarnation):
                    self.refused["ahead"] += 1
                    continue
                if cur is None or order != (d.incarnation, d.base):
                    if span and order is not None and order[0] == d.incarnation and d.base < order[1]:
                        pass   # complete and we hold a version in between: applies to ours as it is
                    else:
                        # Based on a version we held before the one we hold (we moved on since the sender
                        # looked): applied to that version, it makes its own version all the same.
                        past = self.held(name, (d.incarnation, d.base)) if cur is not None else None
                        if past is None:
                            gaps += 1
                            continue
                        recs, chain = {c.name: c for c in past.connections}, []
                if recs is None:
                    recs = {c.name: c for c in cur.connections}
                for n in d.removed:
                    recs.pop(n, None)
                for c in d.changed:
                    recs[c.name] = c
                if len(recs) > self.max_peers:
                    raise ProtocolError(f"bad topology delta: {name} would have more than {self.max_peers} "
                                        "connections")
                chain.append(d)
                order = d.order
            if chain and cur is not None and recs is not None:
                new = PeerEntry(cur.name, cur.nickname, cur.uid, chain[-1].incarnation, chain[-1].version,
                                tuple(recs[n] for n in sorted(recs)))
                self._store(new)
                accepted.append((new, chain))
        return accepted, gaps

    def symmetric_neighbours(self) -> dict[str, list[str]]:
        """Adjacency over connections that both ends report as established (a new dict; rows are not
        changed in place once returned)."""
        peers, sym = self.peers, self._sym
        for a in self._sym_dirty:
            e = peers.get(a)
            if e is None:
                sym.pop(a, None)
                continue
            sym[a] = sorted(b for b in e.established if (o := peers.get(b)) is not None and a in o.established)
        self._sym_dirty.clear()
        return dict(sym)

    def garbage_collect(self, reachable: set[str]) -> list[str]:
        """Forget peers we can no longer reach; returns their names."""
        gone = [n for n in self.peers if n not in reachable and n != self.ourname]
        for n in gone:
            self._sym_dirty.add(n)
            self._sym_dirty.update(self.peers.pop(n).established)
            self._history.pop(n, None)
        return gone
