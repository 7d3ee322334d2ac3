"""The ring: who owns which part of the allocation range. A CRDT gossiped whole.

A token is an address; the token's entry (owner, version, free) says who owns the addresses from it up
to the next token (or the end of the range). Only a token's owner changes its entry, and bumps its
version when it does (to record a donation or its free count); only the owner of a range creates a
token inside it (a split). Tokens are never deleted, so a token missing from one copy is simply not
heard of yet. Merging keeps, per token, the entry with the higher version: commutative, associative,
idempotent. Anything that breaks the rules (two rings claimed independently, the same version with
different contents, someone else moving our tokens or splitting our range) is a `RingConflict`:
merging it could hand out an address twice, so it is refused.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from dataclasses import dataclass

from ..mesh.errors import ProtocolError
from .wire import MAX_INT, peer_name, text, uint

MAX_RING_ENTRIES = 16384   # tokens (and rmpeer tombstones) a ring may hold: donations stop short of it
MAX_VERSION_JUMP = 1 << 20  # one merge may advance a token's version this far: an owner bumps it once per
                            # change of its free count, so a bigger jump is forged (it would pin the entry)


class RingConflict(ProtocolError):
    """Two copies of the ring cannot be merged without risking duplicate addresses."""


@dataclass(frozen=True)
class Entry:
    owner: str
    version: int
    free: int  # the owner's count of unused addresses in this token's range (a hint for donors)


def ip(n: int) -> str:
    return str(ipaddress.IPv4Address(n))


class Ring:
    def __init__(self, network: ipaddress.IPv4Network) -> None:
        self.network = network
        self.start = int(network.network_address)
        self.end = self.start + network.num_addresses  # exclusive
        self.ring_id: str | None = None                 # set by the claim that created the ring
        self.entries: dict[int, Entry] = {}
        self.removed: dict[str, str] = {}               # rmpeer tombstones: removed peer -> remover
        self._tokens: list[int] | None = []

    # --- reading ----------------------------------------------------------------------------------
    @property
    def empty(self) -> bool:
        return self.ring_id is None

    def tokens(self) -> list[int]:
        if self._tokens is None:
            self._tokens = sorted(self.entries)
        return self._tokens

    def ranges(self) -> list[tuple[int, int, str]]:
        """(lo, hi exclusive, owner) for every token, in address order."""
        toks = self.tokens()
        ends = toks[1:] + [self.end] if toks else []
        return [(t, e, self.entries[t].owner) for t, e in zip(toks, ends, strict=True)]

    def range_of(self, token: int) -> tuple[int, int]:
        toks = self.tokens()
        i = toks.index(token)
        return token, toks[i + 1] if i + 1 < len(toks) else self.end

    def owner_at(self, addr: int) -> str | None:
        toks = self.tokens()
        i = bisect_right(toks, addr) - 1
        return self.entries[toks[i]].owner if i >= 0 and self.start <= addr < self.end else None

    def owned_by(self, peer: str) -> list[tuple[int, int]]:
        return [(lo, hi) for lo, hi, o in self.ranges() if o == peer]

    # --- changes (each made only by the owner of what changes) ------------------------------------
    def _set(self, token: int, entry: Entry) -> None:
        if token not in self.entries:
            self._tokens = None
        self.entries[token] = entry

    def claim_all(self, owner: str, ring_id: str) -> None:
        """Create the ring: `owner` takes the whole range. Only valid while nobody else can have one."""
        self.create([owner], ring_id)

    def create(self, owners: list[str] | tuple[str, ...], ring_id: str) -> None:
        """Create the ring split evenly among `owners` in their order (as many as there are addresses).
        Deterministic: every router creating it from the same agreement gets the same entries."""
        assert self.empty and owners
        self.ring_id = ring_id
        size = self.end - self.start
        k = min(len(owners), size)
        bounds = [self.start + i * size // k for i in range(k)] + [self.end]
        for i in range(k):
            self._set(bounds[i], Entry(owners[i], 1, bounds[i + 1] - bounds[i]))

    def set_free(self, token: int, free: int) -> bool:
        e = self.entries[token]
        if e.free == free:
            return False
        self._set(token, Entry(e.owner, e.version + 1, free))
        return True

    def transfer(self, lo: int, hi: int, to: str, us: str) -> None:
        """Hand [lo, hi) — inside one range we own — to `to`, marked all free."""
        toks = self.tokens()
        t = toks[bisect_right(toks, lo) - 1]
        rlo, rhi = self.range_of(t)
        assert self.entries[t].owner == us and rlo <= lo < hi <= rhi
        if hi < rhi and hi not in self.entries:
            self._set(hi, Entry(us, 1, 0))  # our remainder after the donated part; free set by caller
        old = self.entries.get(lo)
        self._set(lo, Entry(to, old.version + 1 if old else 1, hi - lo))

    def take_over(self, peer: str, us: str) -> list[tuple[int, int]]:
        """rmpeer: every range of `peer` becomes ours (a version bump, so it wins everywhere)."""
        taken = self.owned_by(peer)
        for lo, _ in taken:
            e = self.entries[lo]
            self._set(lo, Entry(us, e.version + 1, e.free))
        self.removed[peer] = min(self.removed.get(peer, us), us)
        return taken

    # --- merging ----------------------------------------------------------------------------------
    def merge(self, other: Ring, us: str, refused: dict[str, int] | None = None) -> bool:
        """Merge another copy into ours; True if ours changed. Raises RingConflict, leaving ours as it was.

        An entry whose version leaps more than MAX_VERSION_JUMP ahead of ours (or of nothing, for a new
        token) is skipped and counted in `refused`: no owner writes that often, and accepting it would
        pin the entry so that its real owner could never update it again. Skipping one entry is safe:
        only owners allocate, and our own entries are guarded by the conflict rules."""
        if other.network != self.network:
            raise RingConflict(f"allocation range mismatch: ours {self.network}, theirs {other.network}")
        if other.empty:
            return False
        if self.empty:  # we have none: adopt theirs whole (including space they say is ours)
            self.ring_id, self.entries, self.removed = other.ring_id, dict(other.entries), dict(other.removed)
            self._tokens = None
            return True
        if other.ring_id != self.ring_id:
            raise RingConflict(f"inconsistent rings: ours was created by {self.ring_id}, theirs by "
                               f"{other.ring_id} (two routers claimed the range while apart, or one was reset)")
        updates: dict[int, Entry] = {}
        for tok, theirs in other.entries.items():
            mine = self.entries.get(tok)
            if theirs.version - (mine.version if mine is not None else 0) > MAX_VERSION_JUMP:
                if refused is not None:
                    refused["version_jump"] = refused.get("version_jump", 0) + 1
                continue
            if mine is None:
                if self.owner_at(tok) == us:
                    raise RingConflict(f"inconsistent entries: {theirs.owner} split our range at {ip(tok)}")
                updates[tok] = theirs
            elif theirs.version > mine.version:
                if mine.owner == us and theirs.owner != us:  # (our own later write we forgot: fine)
                    raise RingConflict(f"inconsistent entries: our range at {ip(tok)} was given to "
                                       f"{theirs.owner} by someone else (were we rmpeer'd?)")
                updates[tok] = theirs
            elif theirs.version == mine.version and theirs != mine:
                raise RingConflict(f"inconsistent entries at {ip(tok)} version {mine.version}: "
                                   f"ours {mine.owner} free {mine.free}, theirs {theirs.owner} free {theirs.free}")
        removed = {p: min(by, self.removed.get(p, by)) for p, by in other.removed.items()
                   if p in self.removed or len(self.removed) < MAX_RING_ENTRIES}
        changed = bool(updates) or any(self.removed.get(p) != by for p, by in removed.items())
        for tok, e in updates.items():
            self._set(tok, e)
        self.removed.update(removed)
        return changed

    # --- wire -------------------------------------------------------------------------------------
    def to_wire(self) -> dict | None:
        if self.empty:
            return None
        return {"range": str(self.network), "id": self.ring_id,
                "entries": [[ip(t), self.entries[t].owner, self.entries[t].version, self.entries[t].free]
                            for t in self.tokens()],
                "removed": dict(sorted(self.removed.items()))}

    @classmethod
    def from_wire(cls, w: object, network: ipaddress.IPv4Network) -> Ring:
        """Decode a ring (None: no ring yet). Malformed input (wrong types, values out of range, more than
        MAX_RING_ENTRIES tokens or tombstones) is a ProtocolError, and nothing else escapes."""
        ring = cls(network)
        if w is None:
            return ring
        try:
            if not isinstance(w, dict):
                raise TypeError("not an object")
            entries, removed = w["entries"], w["removed"]
            if not isinstance(entries, list) or not isinstance(removed, dict):
                raise TypeError("entries must be a list, removed an object")
            if len(entries) > MAX_RING_ENTRIES or len(removed) > MAX_RING_ENTRIES:
                raise ValueError(f"more than {MAX_RING_ENTRIES} entries")
            ring.network = ipaddress.IPv4Network(text(w["range"], "range", 18))
            ring.start = int(ring.network.network_address)
            ring.end = ring.start + ring.network.num_addresses
            ring.ring_id = text(w["id"], "ring id", 128)
            for e in entries:
                if not isinstance(e, list) or len(e) != 4:
                    raise TypeError("an entry is [token, owner, version, free]")
                tok_s, owner, version, free = e
                tok = int(ipaddress.IPv4Address(text(tok_s, "token", 15)))
                if not ring.start <= tok < ring.end or tok in ring.entries:
                    raise ValueError(f"token {tok_s} outside the range or repeated")
                ring._set(tok, Entry(peer_name(owner, "owner"), uint(version, "version", MAX_INT),
                                     uint(free, "free count", ring.end - ring.start)))
            ring.removed = {peer_name(p): peer_name(by) for p, by in removed.items()}
        except (ValueError, TypeError, KeyError) as e:
            raise ProtocolError(f"bad IPAM ring: {str(e)[:200]}") from None
        if ring.start not in ring.entries:
            raise ProtocolError("bad IPAM ring: no token at the start of the range")
        return ring
