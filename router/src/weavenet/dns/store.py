"""weaveDNS records: a gossiped store where each router speaks only for the records it registered.

A record is (name, address, container, origin router) with an order (incarnation, version): the
incarnation is the origin's start time, the version its change counter. Removal keeps the record as a
tombstone with a higher order, so a late copy of the old add loses and cannot bring the name back; a
re-add gets a higher order still and wins over the tombstone. Merging keeps the greater order per
record, so stores converge whatever the order of arrival. Every gossip message carries each origin's
newest incarnation: when a router restarts, everyone drops the records of its previous life (it
re-registers the containers still running). Tombstones are dropped after an age (`gc`), counted from
when this store learnt of them, so no clocks need to agree.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..mesh.channel import decode_json, encode_json
from ..mesh.errors import ProtocolError
from ..mesh.names import parse_peer_name

DEFAULT_DOMAIN = "weave.local."
TOMBSTONE_MAX_AGE = 600.0  # far longer than gossip needs to reach everyone
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
        try:
            name, addr, cid, origin, inc, ver, tomb = w  # type: ignore[misc]
            if not isinstance(name, str) or not isinstance(cid, str):
                raise TypeError("name and container must be strings")
            return cls(name.lower(), str(ipaddress.IPv4Address(addr)), cid, parse_peer_name(origin),
                       int(inc), int(ver), bool(tomb))
        except (ValueError, TypeError) as e:
            raise ProtocolError(f"bad DNS record: {e}") from None


class RecordStore:
    def __init__(self, us: str, incarnation: int, domain: str = DEFAULT_DOMAIN) -> None:
        self.us = parse_peer_name(us)
        self.incarnation = incarnation
        self.domain = normalise_domain(domain)
        self.records: dict[Key, Record] = {}
        self._clock = 0
        self._origins: dict[str, int] = {self.us: incarnation}  # newest incarnation heard per origin
        self._dead_since: dict[Key, float] = {}                  # tombstones: when we learnt of them
        self._gone: set[str] = set()                             # origins dropped by peer_gone
        self._by_name: dict[str, set[Key]] = {}                  # lookups without a scan
        self._by_addr: dict[str, set[Key]] = {}

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
        if rec.tombstone:
            self._dead_since.setdefault(rec.key, now)
        else:
            self._dead_since.pop(rec.key, None)

    # --- gossip -----------------------------------------------------------------------------------
    def encode_gossip(self, records: list[Record] | None = None) -> bytes:
        """All records (tombstones too), or only `records` (a delta); always with every origin's incarnation."""
        recs = self.records.values() if records is None else records
        return encode_json({"from": self.us, "origins": self._origins, "records": [r.to_wire() for r in recs]})

    def merge(self, data: bytes, now: float) -> list[Record]:
        """Apply another store's gossip; returns what changed here (records of an origin's previous life
        come back as tombstones: they are gone). Raises ProtocolError for malformed input."""
        msg = decode_json(data)
        if not isinstance(msg, dict) or not isinstance(msg.get("origins"), dict) \
                or not isinstance(msg.get("records"), list):
            raise ProtocolError("bad DNS gossip")
        try:
            sender = parse_peer_name(msg["from"])
            origins = {parse_peer_name(o): int(i) for o, i in msg["origins"].items()}
        except (KeyError, ValueError, TypeError) as e:
            raise ProtocolError(f"bad DNS gossip: {e}") from None
        self._gone.discard(sender)  # a router we gave up on speaks again: its own records count again
        changed: list[Record] = []
        for origin, inc in origins.items():
            changed += self._see_incarnation(origin, inc)
        for w in msg["records"]:
            rec = Record.from_wire(w)
            if rec.origin == self.us or rec.origin in self._gone or rec.incarnation < self._origins.get(rec.origin, 0):
                continue  # only we speak for ourselves; gone routers and previous lives stay gone
            changed += self._see_incarnation(rec.origin, rec.incarnation)
            cur = self.records.get(rec.key)
            if cur is None or rec.order > cur.order:
                self._put(rec, now)
                changed.append(rec)
        return changed

    def _see_incarnation(self, origin: str, inc: int) -> list[Record]:
        if origin == self.us or origin in self._gone or inc <= self._origins.get(origin, -1):
            return []
        self._origins[origin] = inc
        old = [r for r in self.records.values() if r.origin == origin and r.incarnation < inc]
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
        mine = [k for k, r in self.records.items() if r.origin == peer]
        for k in mine:
            self._drop(k)
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
        for index, field in ((self._by_name, rec.name), (self._by_addr, rec.address)):
            keys = index[field]
            keys.discard(key)
            if not keys:
                del index[field]

    # --- lookups ----------------------------------------------------------------------------------
    def lookup(self, name: str) -> list[str]:
        """Live addresses of a name (sorted; the DNS answer shuffles them)."""
        n = name.lower() if name.endswith(".") else name.lower() + "."
        live = {self.records[k].address for k in self._by_name.get(n, ()) if not self.records[k].tombstone}
        return sorted(live, key=lambda a: ipaddress.IPv4Address(a))

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
