"""Per-peer health as this router measures it: RTT, heartbeat loss, datapath, encryption, time in the current
state, fallbacks, reconnects and the last failure's reason.

Sans I/O: fed the mesh's events (ConnectionUp/Down/Failed, Heartbeat, RoutesChanged, PeersChanged) and the data
plane's DatapathChanged through the dispatcher (weaver/events.py); it reads nothing of the mesh. One entry per
peer, at most `max_peers` (the mesh's own cap); inbound failures from addresses that never said who they are only
count. Heartbeats travel over TCP: a "lost" heartbeat is one that did not arrive within its interval (a stall).
A peer skips a heartbeat while its other messages prove it alive (never two in a row): the mesh's Heartbeat
event carries the longest silence on the connection since the previous one, and that silence is what counts.
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..mesh.events import (
    DUPLICATE,
    ConnectionDown,
    ConnectionFailed,
    ConnectionUp,
    Heartbeat,
    PeersChanged,
    RoutesChanged,
)
from ..mesh.routes import RouteTable
from ..weaver.dataplane import DatapathChanged

WINDOW = 60.0            # seconds of RTT samples and heartbeat arrivals the figures cover
MAX_SAMPLES = 256        # per peer: a peer sending heartbeats too fast cannot grow the window
LOSS_UNHEALTHY = 0.2     # over this fraction of heartbeats late or missing: the link is marked
FASTDP_GRACE = 10.0      # a fast-path-capable peer still on the sleeve after this long: "fell back"
BROKEN_KEEP = 600.0      # a direct connection that was lost counts as a broken link this long (unless back)
MAX_REASON = 120

# Failure reasons, classified for dashboards and alerts (the raw text is kept too).
_KINDS = (("password", ("authentication", "password", "encryption mismatch")),
          ("version", ("version", "not a weavenet peer")),
          ("timeout", ("timed out", "timeout", "no heartbeat")),
          ("unreachable", ("refused", "unreachable", "no route", "network is down", "host is down")),
          ("restarted", ("restarted", "shutting down")),
          ("limit", ("limit", "too fast", "too many")),
          ("protocol", ("protocol error", "malformed", "bad ")))
FAILURE_KINDS = tuple(k for k, _ in _KINDS) + ("closed", "other")


def classify(reason: str) -> str:
    r = reason.lower()
    for kind, words in _KINDS:
        if any(w in r for w in words):
            return kind
    return "closed" if "closed" in r or r == "eof" else "other"


@dataclass
class PeerHealth:
    name: str
    state: str = "unknown"           # connected | relayed | unreachable | failing | unknown
    since: float = 0.0
    conn_id: int | None = None
    address: str = ""                # the peer's underlay ip:port, as connected
    encrypted: bool = False
    fastdp_capable: bool = False     # advertised the fast path and no password: fastdp is expected
    datapath: str = "none"           # fastdp | sleeve | none (not directly connected)
    via: str = ""                    # next hop when relayed
    ups: int = 0
    replacing: bool = False          # its connection lost a duplicate tie-break: the other one comes up next
    fallbacks: int = 0
    failure: str = ""
    failure_kind: str = ""
    failure_at: float | None = None
    failures: Counter = field(default_factory=Counter)   # kind -> count (FAILURE_KINDS: bounded)
    # The window's samples, kept so that a figure costs C-speed calls (median, sum) even for 1000 peers.
    rtt_at: deque = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    rtts: deque = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))      # seconds, as rtt_at
    arrivals: deque = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))  # arrival times
    missed: deque = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))    # beats missed before each


class HealthTracker:
    def __init__(self, ourname: str, *, mtu: int, fastdp: bool, heartbeat_interval: float,
                 max_peers: int, clock_start: float = 0.0) -> None:
        self.ourname = ourname
        self.mtu = mtu
        self.fastdp = fastdp
        self.interval = heartbeat_interval
        self.max_peers = max_peers
        self.peers: dict[str, PeerHealth] = {}
        self._routes = RouteTable({ourname: []}, ourname)
        self._addr_peer: dict[str, str] = {}        # dialled/observed address -> peer, bounded like peers
        self.unattributed_failures: Counter = Counter()   # kind -> count (inbound, unknown remote)
        self.refused_peers = 0                      # peers not tracked: the table was full

    # --- events -------------------------------------------------------------------------------
    def on_event(self, ev: object, now: float) -> None:
        if isinstance(ev, Heartbeat):
            self._heartbeat(ev, now)
        elif isinstance(ev, ConnectionUp):
            self._up(ev, now)
        elif isinstance(ev, ConnectionDown):
            self._down(ev, now)
        elif isinstance(ev, ConnectionFailed):
            self._failed(ev, now)
        elif isinstance(ev, RoutesChanged):
            self._routes = ev.routes
            self._follow_routes(now)
        elif isinstance(ev, PeersChanged):
            self._peers(ev.known, now)
        elif isinstance(ev, DatapathChanged):
            self._datapath(ev.peer, ev.datapath, now)

    def _entry(self, name: str, now: float) -> PeerHealth | None:
        p = self.peers.get(name)
        if p is None:
            if len(self.peers) >= self.max_peers or name == self.ourname:
                self.refused_peers += name != self.ourname
                return None
            p = self.peers[name] = PeerHealth(name, since=now)
        return p

    def _set_state(self, p: PeerHealth, state: str, now: float) -> None:
        if p.state != state:
            p.state, p.since = state, now

    def _up(self, ev: ConnectionUp, now: float) -> None:
        p = self._entry(ev.peer, now)
        if p is None:
            return
        p.ups += not p.replacing
        p.replacing = False
        p.conn_id = ev.conn_id
        p.address = f"{ev.remote_ip}:{ev.remote_port}" if ev.remote_ip else ""
        p.encrypted = ev.session_keys is not None
        p.fastdp_capable = self.fastdp and bool(ev.features.get("fastdp")) and not p.encrypted
        p.datapath, p.via = "sleeve", ""
        for q in (p.rtt_at, p.rtts, p.arrivals, p.missed):
            q.clear()
        if len(self._addr_peer) < 4 * self.max_peers and p.address:
            self._addr_peer[p.address] = ev.peer
        self._set_state(p, "connected", now)

    def _down(self, ev: ConnectionDown, now: float) -> None:
        p = self.peers.get(ev.peer)
        if p is None or p.conn_id != ev.conn_id:
            return   # a duplicate connection that lost the tie-break: the other one stays
        p.conn_id = None
        if ev.reason == DUPLICATE:   # both ends dialled at once; the winner's ConnectionUp follows
            p.replacing = True
            return
        p.datapath = "none"
        self._record_failure(p, ev.reason, now)
        self._set_state(p, "unreachable", now)
        self._follow_routes(now)

    def _failed(self, ev: ConnectionFailed, now: float) -> None:
        name = ev.peer or self._addr_peer.get(ev.address, "")
        p = self.peers.get(name) if name else None
        if p is None:
            self.unattributed_failures[classify(ev.reason)] += 1
            return
        self._record_failure(p, ev.reason, now)
        if p.conn_id is None and p.state != "relayed":
            self._set_state(p, "failing", now)

    def _record_failure(self, p: PeerHealth, reason: str, now: float) -> None:
        p.failure = reason[:MAX_REASON]
        p.failure_kind = classify(reason)
        p.failure_at = now
        p.failures[p.failure_kind] += 1

    def _heartbeat(self, ev: Heartbeat, now: float) -> None:
        p = self.peers.get(ev.peer)
        if p is None or p.conn_id != ev.conn_id:
            return
        if p.arrivals:   # the connection's silence (heartbeats may be skipped), else the gap between heartbeats
            p.missed.append(self._missed(ev.quiet if ev.quiet is not None else now - p.arrivals[-1]))
        else:
            p.missed.append(0)
        p.arrivals.append(now)
        if ev.rtt is not None:
            p.rtt_at.append(now)
            p.rtts.append(ev.rtt)

    def _datapath(self, peer: str, datapath: str, now: float) -> None:
        p = self.peers.get(peer)
        if p is None or p.conn_id is None or datapath not in ("fastdp", "sleeve") or p.datapath == datapath:
            return
        if p.datapath == "fastdp" and datapath == "sleeve":
            p.fallbacks += 1
        p.datapath = datapath

    def _follow_routes(self, now: float) -> None:
        """Peers without a connection of their own: relayed via the next hop, or unreachable."""
        for p in self.peers.values():
            if p.conn_id is not None:
                continue
            hop = self._routes.unicast.get(p.name)
            if hop and hop != p.name:
                p.via = hop
                self._set_state(p, "relayed", now)
            elif p.state in ("relayed", "unknown"):
                p.via = ""
                self._set_state(p, "unreachable", now)

    def _peers(self, known: frozenset[str], now: float) -> None:
        """Every peer in the topology has an entry (relayed ones too); those it no longer has (garbage-
        collected) leave the table."""
        gone = [n for n in self.peers if n not in known]
        for n in gone:
            del self.peers[n]
        if gone:
            self._addr_peer = {a: n for a, n in self._addr_peer.items() if n in self.peers}
        for n in sorted(known - self.peers.keys()):
            if self._entry(n, now) is None:
                break
        self._follow_routes(now)

    # --- figures ------------------------------------------------------------------------------
    def _missed(self, gap: float, allowed: int = 1) -> int:
        """Heartbeats missing in a silence (one over `allowed` + 0.5 intervals): `allowed` is 1 between two
        messages, 2 after the last heartbeat (the one in between may have been skipped for other traffic)."""
        return max(0, round(gap / self.interval) - allowed) if gap > (allowed + 0.5) * self.interval else 0

    def _trim(self, p: PeerHealth, now: float) -> None:
        while p.rtt_at and now - p.rtt_at[0] > WINDOW:
            p.rtt_at.popleft()
            p.rtts.popleft()
        while p.arrivals and now - p.arrivals[0] > WINDOW:
            p.arrivals.popleft()
            p.missed.popleft()

    def loss(self, p: PeerHealth, now: float) -> float | None:
        """Fraction of the heartbeats expected in the window that did not arrive on time: each gap between
        arrivals (and the silence since the last one) longer than 1.5 intervals counts its missing beats."""
        self._trim(p, now)
        if p.conn_id is None or not p.arrivals:
            return None
        missed = sum(p.missed) + self._missed(now - p.arrivals[-1], allowed=2)
        got = len(p.arrivals)
        return round(missed / (got + missed), 3)

    def figures(self, p: PeerHealth, now: float) -> tuple[float | None, float | None, float | None, list[str]]:
        """(RTT median, RTT max, heartbeat loss, problems), each computed once."""
        loss = self.loss(p, now)   # (trims the window)
        rtts = p.rtts
        return (statistics.median(rtts) if rtts else None, max(rtts) if rtts else None, loss,
                self.problems(p, now, loss))

    def problems(self, p: PeerHealth, now: float, loss: float | None) -> list[str]:
        """Why a peer is marked unhealthy (empty: healthy)."""
        out = []
        if p.state in ("unreachable", "failing"):
            out.append(p.state + (f" ({p.failure_kind})" if p.failure_kind else ""))
        elif self.link_broken(p, now):
            out.append(f"direct connection lost ({p.failure_kind})")
        if loss is not None and loss > LOSS_UNHEALTHY:
            out.append(f"heartbeat loss {loss:.0%}")
        if p.fastdp_capable and p.datapath == "sleeve" and now - p.since > FASTDP_GRACE:
            out.append("fell back to sleeve" if p.fallbacks else "fastdp not up")
        return out

    def link_broken(self, p: PeerHealth, now: float) -> bool:
        """No connection now, though there was one (or we tried) recently: the direct link is broken."""
        return p.conn_id is None and (p.ups > 0 or p.failure_at is not None) \
            and now - max(p.since, p.failure_at or 0.0) < BROKEN_KEEP

    def report(self, now: float, nicknames: Mapping[str, str] | None = None) -> list[dict]:
        """One dict per peer (sorted by name), the shape `weave report` carries under "health"."""
        nick = nicknames or {}
        rows = []
        for name in sorted(self.peers):
            p = self.peers[name]
            med, top, loss, problems = self.figures(p, now)
            rows.append({
                "name": name, "nickname": nick.get(name, ""), "state": p.state,
                "state_for_s": round(now - p.since, 1), "address": p.address,
                "datapath": "relayed" if p.state == "relayed" else p.datapath, "via": p.via,
                "encrypted": p.encrypted if p.conn_id is not None else None,
                "mtu": self.mtu if p.conn_id is not None else None,
                "rtt_ms": round(med * 1000, 3) if med is not None else None,
                "rtt_max_ms": round(top * 1000, 3) if top is not None else None,
                "heartbeat_loss": loss,
                "reconnects": max(0, p.ups - 1), "fallbacks": p.fallbacks,
                "last_failure": p.failure, "last_failure_kind": p.failure_kind,
                "last_failure_s_ago": round(now - p.failure_at, 1) if p.failure_at is not None else None,
                "failures": dict(p.failures),
                "healthy": not problems, "problems": problems,
            })
        return rows
