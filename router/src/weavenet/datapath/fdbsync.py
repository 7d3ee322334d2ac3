"""Static VXLAN FDB entries from the peers' own word (pure: no I/O).

The VXLAN device does not learn (a datagram must never teach it where a MAC lives), so without
unicast entries every frame to another host goes out through the all-zero default entries: one copy
to every fast-path peer. Instead each router tells its fast-path peers which MACs are local to it
(over the per-connection datapath message), and the receiver points those MACs at that peer's
underlay address: ``bridge fdb replace MAC dev vxlan-6784 dst PEER_IP self permanent``.

Adverts are JSON ``{"fdb": {"full": true, "add": [...]}}`` (the whole list: on connection up and as
anti-entropy every FULL_EVERY seconds) or ``{"fdb": {"full": false, "add": [...], "del": [...]}}``
(a change, on top of the last full list; the connection is ordered). A peer is hostile input: MACs
must be canonical unicast strings, at most MAX_PEER_MACS per peer and MAX_TOTAL_MACS over all
peers, and a MAC that is ours (or a peer's VXLAN MAC, which carries the heartbeats) is never taken.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

MAX_PEER_MACS = 4096
MAX_TOTAL_MACS = 32768
MAX_ADVERT_BYTES = 2 * MAX_PEER_MACS * 22 + 256   # add + del lists of quoted MACs, with room to spare
FULL_EVERY = 30.0         # seconds between full lists to a peer (anti-entropy)
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
ZERO_MAC = "00:00:00:00:00:00"


class AdvertError(ValueError):
    """A datapath message that claims to be an FDB advert and is not a valid one; ``reason`` is the
    drop counter it goes to."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Advert:
    full: bool
    add: frozenset[str]
    remove: frozenset[str] = frozenset()


def encode_full(macs) -> bytes:
    return json.dumps({"fdb": {"full": True, "add": sorted(macs)}}, separators=(",", ":")).encode()


def encode_diff(add, remove) -> bytes:
    return json.dumps({"fdb": {"full": False, "add": sorted(add), "del": sorted(remove)}},
                      separators=(",", ":")).encode()


def unicast_mac(mac: object) -> bool:
    """A canonical (lower-case, colon-separated) unicast, non-zero MAC."""
    return (isinstance(mac, str) and len(mac) == 17 and _MAC_RE.fullmatch(mac) is not None
            and not int(mac[:2], 16) & 1 and mac != ZERO_MAC)


def _mac_list(obj: dict, key: str) -> frozenset[str]:
    items = obj.get(key, [])
    if not isinstance(items, list):
        raise AdvertError("fdb_malformed", f"{key} is not a list")
    if len(items) > MAX_PEER_MACS:
        raise AdvertError("fdb_too_many", f"{len(items)} MACs in {key} (at most {MAX_PEER_MACS})")
    for m in items:
        if not unicast_mac(m):
            raise AdvertError("fdb_bad_mac", f"{str(m)[:40]!r} is not a unicast MAC")
    return frozenset(items)


def decode(body: bytes) -> Advert | None:
    """The advert in a datapath message, or None when the message is something else (a fast-path
    status). Raises AdvertError for an advert that is not valid, or any oversized message."""
    if len(body) > MAX_ADVERT_BYTES:
        raise AdvertError("fdb_too_big", f"datapath message of {len(body)} bytes")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None   # not ours to judge: the status parser treats garbage as "not heard"
    if not isinstance(obj, dict) or "fdb" not in obj:
        return None
    fdb = obj["fdb"]
    if not isinstance(fdb, dict) or not isinstance(fdb.get("full"), bool):
        raise AdvertError("fdb_malformed", "fdb is not an object with a boolean 'full'")
    add, remove = _mac_list(fdb, "add"), _mac_list(fdb, "del")
    if fdb["full"] and remove:
        raise AdvertError("fdb_malformed", "a full list with deletions")
    if add & remove:
        raise AdvertError("fdb_malformed", "MACs both added and deleted")
    return Advert(fdb["full"], add, remove)


class RemoteMacs:
    """What each peer says is local to it, and the VXLAN FDB unicast entries that follow.

    A MAC claimed by two peers goes to the earlier claimant (as a remote cannot take over one of our
    MACs, a peer cannot steal another's); when that claim ends, the next claimant gets it. Entries
    are installed only towards ``eligible`` peers (fast path up, or in its grace period)."""

    def __init__(self, per_peer: int = MAX_PEER_MACS, total: int = MAX_TOTAL_MACS) -> None:
        self.per_peer = per_peer
        self.total_cap = total
        self.claims: dict[str, frozenset[str]] = {}
        self.owners: dict[str, list[str]] = {}      # mac -> claimants, earliest first
        self.installed: dict[str, str] = {}         # mac -> ip the VXLAN FDB points it at
        self.total = 0
        self.refused: Counter[str] = Counter()      # reason -> adverts (or MACs, for fdb_ours) refused
        self.dirty = False

    def apply(self, peer: str, adv: Advert, forbidden: set[str] | frozenset[str]) -> str | None:
        """Take `peer`'s advert; returns the reason it was refused (counted), or None."""
        reason = None
        if not adv.full and peer not in self.claims:
            reason = "fdb_no_base"   # a change before any full list: wait for the next full one
        else:
            new = set(adv.add) if adv.full else (set(self.claims[peer]) - adv.remove) | adv.add
            ours = new & forbidden
            if ours:
                self.refused["fdb_ours"] += len(ours)
                new -= ours
            if len(new) > self.per_peer:
                reason = "fdb_too_many"
            elif self.total - len(self.claims.get(peer, ())) + len(new) > self.total_cap:
                reason = "fdb_total"
            else:
                self._set(peer, frozenset(new))
                return None
        self.refused[reason] += 1
        return reason

    def drop_peer(self, peer: str) -> None:
        if peer in self.claims:
            self._set(peer, frozenset())
            del self.claims[peer]

    def _set(self, peer: str, new: frozenset[str]) -> None:
        old = self.claims.get(peer, frozenset())
        if new == old and peer in self.claims:
            return
        for mac in old - new:
            owners = self.owners[mac]
            owners.remove(peer)
            if not owners:
                del self.owners[mac]
        for mac in new - old:
            self.owners.setdefault(mac, []).append(peer)
        self.total += len(new) - len(old)
        self.claims[peer] = new
        self.dirty = True

    def changes(self, eligible: dict[str, str], forbidden: set[str] | frozenset[str] = frozenset()
                ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(entries to replace, entries to delete) to make the FDB follow the claims of the
        `eligible` peers (peer -> underlay ip); our own MACs (`forbidden`) are never pointed away."""
        desired: dict[str, str] = {}
        for mac, owners in self.owners.items():
            if mac in forbidden:
                continue
            for p in owners:
                ip = eligible.get(p)
                if ip is not None:
                    desired[mac] = ip
                    break
        replace = sorted((m, ip) for m, ip in desired.items() if self.installed.get(m) != ip)
        delete = sorted((m, ip) for m, ip in self.installed.items() if m not in desired)
        self.installed = desired
        self.dirty = False
        return replace, delete

    def forget_ip(self, ip: str) -> None:
        """The FDB entries towards `ip` were flushed (path down): install them again when eligible."""
        self.installed = {m: i for m, i in self.installed.items() if i != ip}
        self.dirty = True


class Advertiser:
    """What to tell each fast-path peer about our local MACs: a full list on a new connection and
    every FULL_EVERY seconds, otherwise only the difference since the last message."""

    def __init__(self) -> None:
        self.sent: dict[str, tuple[object, frozenset[str], float]] = {}   # peer -> (conn key, MACs, full at)

    def due(self, peer: str, conn: object, local: frozenset[str], now: float) -> bytes | None:
        last = self.sent.get(peer)
        if last is None or last[0] != conn or now - last[2] >= FULL_EVERY:
            self.sent[peer] = (conn, local, now)
            return encode_full(local)
        if last[1] != local:
            self.sent[peer] = (conn, local, last[2])
            return encode_diff(local - last[1], last[1] - local)
        return None

    def retain(self, peers) -> None:
        for p in set(self.sent) - set(peers):
            del self.sent[p]
