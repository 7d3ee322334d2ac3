"""weaveDNS records: a gossiped store where each router speaks only for the records it registered.

A record is (name, address, container, origin router) with an order (incarnation, version): the
incarnation is the origin's start time, the version its change counter. Removal keeps the record as a
tombstone with a higher order, so a late copy of the old add loses and cannot bring the name back; a
re-add gets a higher order still and wins over the tombstone. Merging keeps the greater order per
record, so stores converge whatever the order of arrival. Every gossip message carries each origin's
newest incarnation: when a router restarts, everyone drops the records of its previous life (it
re-registers the containers still running). Tombstones are dropped after an age (`gc`), counted from
when this store learnt of them, so no clocks need to agree.

Gossip is relayed (a router passes on what was news to it), so records of third routers arrive from
any neighbour and cannot be checked against their origin. What is checked: the message's sender is the
router the mesh authenticated; names lie in our domain; an incarnation is no later than our own start
time plus the time since plus MAX_CLOCK_AHEAD (a forged huge one would otherwise wipe a router's names
for good), and a version no higher than one change per millisecond of the origin's life could reach;
at most MAX_ORIGINS origins, MAX_RECORDS_PER_ORIGIN records per origin and MAX_RECORDS in all. What
fails is skipped and counted in `refused` (malformed messages are a ProtocolError).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from ..ipam.wire import decode_message, peer_name, text, uint
from ..mesh.channel import encode_json
from ..mesh.errors import ProtocolError
from ..mesh.names import parse_peer_name

DEFAULT_DOMAIN = "weave.local."
TOMBSTONE_MAX_AGE = 600.0  # far longer than gossip needs to reach everyone
MAX_CLOCK_AHEAD_MS = 3_600_000  # how far another router's clock may run ahead of ours (incarnations are start times)
MAX_RECORDS_PER_ORIGIN = 8192   # live names and tombstones one router may have in our store
MAX_RECORDS = 65536             # all records in our store
MAX_ORIGINS = 4096              # routers we keep records (or an incarnation) of
MAX_CONTAINER_ID = 128
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def normalise_domain(domain: str) -> str:
    d = domain.strip().lower().strip(".")
    if not d or not all(_LABEL.match(x) for x in d.split(".")):
        raise ValueError(f"invalid DNS domain {domain!r}")
    return d + "."


def qualify(name: str, domain: str = DEFAULT_DOMAIN) -> str:
    """`x` or `x.weave.local[.]` -> `x.weave.local.`; ValueError for names outside the domain."""
    domain = normalise_domain(domain)
    n = name.strip().lower().rstrip(".")
    if n and "." not in n:
        n = f"{n}.{domain[:-1]}"
    fq = n + "."
    if not fq.endswith("." + domain) or not all(_LABEL.match(x) for x in n.split(".")) or len(fq) > 254:
        raise ValueError(f"invalid name {name!r}: expected a host name in the domain {domain}")
    return fq


Key = tuple[str, str, str, str]  # name, address, container id, origin


@dataclass(frozen=True)
class Record:
    name: str         # FQDN, lowercase, with the trailing dot
    address: str      # IPv4, dotted
    container: str
    origin: str       # the router that registered it, the only one that changes it
    incarnation: int
    version: int
    tombstone: bool = False

    @property
    def key(self) -> Key:
        return (self.name, self.address, self.container, self.origin)

    @property
    def order(self) -> tuple[int, int, bool]:
        return (self.incarnation, self.version, self.tombstone)  # a tie (never expected) goes to removal

    def to_wire(self) -> list:
        return [self.name, self.address, self.container, self.origin, self.incarnation, self.version,
                int(self.tombstone)]

    @classmethod
    def from_wire(cls, w: object) -> Record:
        """Types and ranges checked (the name's domain is the store's business); ProtocolError otherwise."""
        try:
            if not isinstance(w, list) or len(w) != 7:
                raise TypeError("a record is [name, address, container, origin, incarnation, version, tombstone]")
            name, addr, cid, origin, inc, ver, tomb = w
            if tomb not in (0, 1):  # (True/False compare equal to 1/0)
                raise ValueError("tombstone must be 0 or 1")
            return cls(text(name, "name", 1024).lower(), str(ipaddress.IPv4Address(text(addr, "address", 15))),
                       text(cid, "container", MAX_CONTAINER_ID), peer_name(origin, "origin"), uint(inc, "incarnation"),
                       uint(ver, "version"), bool(tomb))
        except (ValueError, TypeError) as e:
            raise ProtocolError(f"bad DNS record: {str(e)[:200]}") from None


class RecordStore:
    def __init__(self, us: str, incarnation: int, domain: str = DEFAULT_DOMAIN, started: float = 0.0) -> None:
        """`incarnation`: our start time in ms (wall clock); `started`: the same moment on the clock of
        the `now` given to `merge` (so the store can tell how late another router's start may be)."""
        self.us = parse_peer_name(us)
        self.incarnation = incarnation
        self.started = started
        self.domain = normalise_domain(domain)
        self.records: dict[Key, Record] = {}
        self._clock = 0
        self._origins: dict[str, int] = {self.us: incarnation}  # newest incarnation heard per origin
        self._dead_since: dict[Key, float] = {}                  # tombstones: when we learnt of them
        self._gone: set[str] = set()                             # origins dropped by peer_gone
        self._by_name: dict[str, set[Key]] = {}                  # lookups without a scan
        self._by_addr: dict[str, set[Key]] = {}
        self._by_origin: dict[str, set[Key]] = {}                # caps per origin, and drops without a scan
        self.refused: dict[str, int] = {}                        # records, origins or messages refused, per reason

    # --- our own records --------------------------------------------------------------------------
    def add(self, name: str, address: str, container: str, now: float) -> list[Record]:
        """Register a name for a container of ours; returns the changed records (to gossip)."""
        rec = Record(qualify(name, self.domain), str(ipaddress.IPv4Address(address)), container, self.us,
                     self.incarnation, 0)
        cur = self.records.get(rec.key)
        if cur is not None and not cur.tombstone:
            return []
        return [self._write(rec, now)]

    def remove(self, container: str, now: float, address: str | None = None, name: str | None = None
               ) -> list[Record]:
        """Tombstone our records of the container (only those with this address and/or name if given)."""
        addr = str(ipaddress.IPv4Address(address)) if address is not None else None
        fq = qualify(name, self.domain) if name is not None else None
        hits = [r for r in self.records.values() if r.origin == self.us and not r.tombstone
                and r.container == container and addr in (None, r.address) and fq in (None, r.name)]
        return [self._write(Record(r.name, r.address, r.container, r.origin, 0, 0, True), now) for r in hits]

    def remove_container(self, container: str, now: float) -> list[Record]:
        return self.remove(container, now)

    def _write(self, rec: Record, now: float) -> Record:
        self._clock += 1
        rec = Record(rec.name, rec.address, rec.container, self.us, self.incarnation, self._clock, rec.tombstone)
        self._put(rec, now)
        return rec

    def _put(self, rec: Record, now: float) -> None:
        self.records[rec.key] = rec
        self._by_name.setdefault(rec.name, set()).add(rec.key)
        self._by_addr.setdefault(rec.address, set()).add(rec.key)
        self._by_origin.setdefault(rec.origin, set()).add(rec.key)
        if rec.tombstone:
            self._dead_since.setdefault(rec.key, now)
        else:
            self._dead_since.pop(rec.key, None)

    # --- gossip -----------------------------------------------------------------------------------
    def encode_gossip(self, records: list[Record] | None = None) -> bytes:
        """All records (tombstones too), or only `records` (a delta); always with every origin's incarnation."""
        recs = self.records.values() if records is None else records
        return encode_json({"from": self.us, "origins": self._origins, "records": [r.to_wire() for r in recs]})

    def merge(self, data: bytes, now: float, src: str | None = None) -> list[Record]:
        """Apply another store's gossip; returns what changed here (records of an origin's previous life
        come back as tombstones: they are gone). `src`: the neighbour the mesh authenticated (the adapter
        always passes it): gossip claiming another sender is refused. Raises ProtocolError for malformed
        input (and nothing else); records breaking a rule are skipped and counted in `refused`."""
        msg = decode_message(data, "DNS gossip")
        if not isinstance(msg.get("origins"), dict) or not isinstance(msg.get("records"), list):
            raise ProtocolError("bad DNS gossip: origins must be an object, records a list")
        try:
            sender = peer_name(msg.get("from"), "from")
            origins = {peer_name(o, "origin"): uint(i, "incarnation") for o, i in msg["origins"].items()}
        except (ValueError, TypeError) as e:
            raise ProtocolError(f"bad DNS gossip: {e}") from None
        records = [Record.from_wire(w) for w in msg["records"]]  # all checked before anything changes
        if src is not None and sender != src:
            self._refuse("forged_sender")
            return []
        self._gone.discard(sender)  # a router we gave up on speaks again: its own records count again
        limit = self._newest_start(now)
        changed: list[Record] = []
        for origin, inc in origins.items():
            if inc > limit:
                self._refuse("future_incarnation")
            else:
                changed += self._see_incarnation(origin, inc)
        for rec in records:
            if rec.origin == self.us or rec.origin in self._gone or rec.incarnation < self._origins.get(rec.origin, 0):
                continue  # only we speak for ourselves; gone routers and previous lives stay gone
            if rec.incarnation > limit:
                self._refuse("future_incarnation")
                continue
            if rec.version > limit - rec.incarnation + MAX_CLOCK_AHEAD_MS:  # > one change per ms of its life
                self._refuse("future_version")
                continue
            if not self._in_domain(rec.name):
                self._refuse("outside_domain")
                continue
            cur = self.records.get(rec.key)
            if cur is None and len(self._by_origin.get(rec.origin, ())) >= MAX_RECORDS_PER_ORIGIN:
                self._refuse("origin_full")
                continue
            if cur is None and len(self.records) >= MAX_RECORDS:
                self._refuse("store_full")
                continue
            changed += self._see_incarnation(rec.origin, rec.incarnation)
            if rec.origin not in self._origins:
                continue  # (refused: too many origins)
            cur = self.records.get(rec.key)
            if cur is None or rec.order > cur.order:
                self._put(rec, now)
                changed.append(rec)
        return changed

    def _newest_start(self, now: float) -> int:
        """The latest incarnation (start time, ms) another router can have now, given our own."""
        return self.incarnation + int(max(0.0, now - self.started) * 1000) + MAX_CLOCK_AHEAD_MS

    def _in_domain(self, name: str) -> bool:
        return (len(name) <= 254 and name.endswith("." + self.domain)
                and all(_LABEL.match(x) for x in name[:-1].split(".")))

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _see_incarnation(self, origin: str, inc: int) -> list[Record]:
        if origin == self.us or origin in self._gone or inc <= self._origins.get(origin, -1):
            return []
        if origin not in self._origins and len(self._origins) >= MAX_ORIGINS:
            self._refuse("too_many_origins")
            return []
        self._origins[origin] = inc
        old = [self.records[k] for k in self._by_origin.get(origin, ()) if self.records[k].incarnation < inc]
        for r in old:
            self._drop(r.key)
        return [Record(r.name, r.address, r.container, r.origin, r.incarnation, r.version, True)
                for r in old if not r.tombstone]

    def peer_gone(self, peer: str) -> int:
        """Forget a router gone for good (rmpeer, or unreachable long enough) and its records. Late gossip
        from others does not bring them back; the router itself, if it returns, does."""
        peer = parse_peer_name(peer)
        if peer == self.us:
            return 0
        mine = list(self._by_origin.get(peer, ()))
        for k in mine:
            self._drop(k)
        if len(self._gone) >= MAX_ORIGINS:
            self._gone.pop()  # (bounded: forgetting one departed router only lets stale copies of it back)
        self._gone.add(peer)
        self._origins.pop(peer, None)
        return len(mine)

    def peer_back(self, peer: str) -> None:
        """The router is reachable again (it was only partitioned): accept its records from anyone."""
        self._gone.discard(parse_peer_name(peer))

    def gc(self, now: float, max_age: float = TOMBSTONE_MAX_AGE) -> int:
        """Drop tombstones older than `max_age` (seconds since we learnt of them)."""
        old = [k for k, t in self._dead_since.items() if now - t > max_age]
        for k in old:
            self._drop(k)
        return len(old)

    def _drop(self, key: Key) -> None:
        rec = self.records.pop(key)
        self._dead_since.pop(key, None)
        for index, field in ((self._by_name, rec.name), (self._by_addr, rec.address), (self._by_origin, rec.origin)):
            keys = index[field]
            keys.discard(key)
            if not keys:
                del index[field]

    # --- lookups ----------------------------------------------------------------------------------
    def lookup(self, name: str) -> list[str]:
        """Live addresses of a name (sorted; the DNS answer shuffles them)."""
        n = name.lower() if name.endswith(".") else name.lower() + "."
        live = {self.records[k].address for k in self._by_name.get(n, ()) if not self.records[k].tombstone}
        return sorted(live, key=socket.inet_aton)   # (cheap: a name may have thousands of addresses)

    def reverse(self, address: str) -> list[str]:
        return sorted({self.records[k].name for k in self._by_addr.get(address, ()) if not self.records[k].tombstone})

    def container_names(self, container: str) -> list[Record]:
        return sorted((r for r in self.records.values() if r.container == container and not r.tombstone),
                      key=lambda r: r.key)

    def live(self) -> list[Record]:
        return sorted((r for r in self.records.values() if not r.tombstone), key=lambda r: r.key)

    def report(self) -> list[dict]:
        return [{"name": r.name, "address": r.address, "container": r.container, "origin": r.origin}
                for r in self.live()]
