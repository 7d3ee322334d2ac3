"""The router's control plane as one sans-I/O state machine.

The adapter feeds it events (a dial succeeded or failed, bytes arrived, a connection was lost, time
passed) and executes the actions it returns (send bytes, close, dial). Nothing here touches a socket
or a clock, which is what lets a test run a 50-peer mesh in one process.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections import deque
from dataclasses import dataclass, replace
from enum import StrEnum

from .channel import Channel, MsgType, decode_heartbeat, decode_json, encode_heartbeat, encode_json
from .connmaker import ConnectionMaker
from .crypto import Session
from .errors import HandshakeRefused, ProtocolError
from .events import (
    DUPLICATE,
    SLEEVE_KEYS,
    AppMessage,
    ConnectionDown,
    ConnectionFailed,
    ConnectionUp,
    DatapathMessage,
    Event,
    Heartbeat,
    PeersChanged,
    RoutesChanged,
)
from .grid import due_after
from .handshake import Handshake, HandshakeDone, LocalIdentity, RemoteHello
from .names import format_address, parse_peer_address, parse_peer_name
from .routes import RouteTable
from .topology import DAY_MS, DEFAULT_MAX_PEERS, ConnRecord, PeerDelta, PeerEntry, Topology

log = logging.getLogger("weavenet.mesh")


MAX_GOSSIP_BODY = 1024 * 1024        # bigger gossip is split over several messages (frames are bounded)


@dataclass
class MeshConfig:
    password_hash: bytes | None = None
    conn_limit: int = 100
    discovery: bool = True
    # Liveness has two layers. A peer whose host is gone or whose link is cut stops acknowledging: every
    # connection carries a heartbeat each way every heartbeat_interval, and the adapters set TCP_USER_TIMEOUT
    # (tcp_user_timeout), so the kernel ends the connection once one of ours went that long unacknowledged
    # (retransmitting it meanwhile: one lost segment or ACK costs nothing): at most heartbeat_interval +
    # tcp_user_timeout (1.5 s) after the last answer, at no cost to our Python, whatever our Python or the
    # peer's is doing. TCP keepalive (tcp_keepalive seconds idle) is only a backstop for a connection we
    # stopped sending on: with probes after 1 s idle it ended a connection whenever a single probe's answer
    # went missing (with a user timeout one unanswered probe is enough), which 50 routers on one host saw
    # every few minutes, and it cost a probe and its answer per connection per second. Heartbeats are also
    # for a peer whose kernel still answers but whose router does not (a hung process), and carry the RTT:
    # the silence limit is a few of them, long enough that an overloaded peer, late with its heartbeats, is
    # not dropped and redialled (churn that overloads everyone further), short enough to route around a hang.
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 6.0
    tcp_keepalive: int = 2           # seconds (the kernel's unit): longer than heartbeat_interval
    tcp_user_timeout: float = 0.5
    # The user timeout also ends a connection whose data waited that long on a closed window, though the
    # receiver's kernel answers: a router starved of CPU (an overloaded host) leaves its peers' gossip
    # unread, and with the kernel's default buffer (128 KiB until the reader keeps up) the window closes
    # within a join's burst. Each peer socket's receive buffer holds a few full gossip messages instead.
    tcp_rcvbuf: int = 4 * MAX_GOSSIP_BODY
    # An overloaded host is not a dead one. When our own timers ran late_limit late (this host is starved),
    # every connection, and when a peer's heartbeat came over half the silence limit after the one before
    # (late enough to be overload, not an older router's 2 s cadence), that peer's connection, gets the
    # patient user timeout for patience_hold seconds (each new sign of overload extends it), so a peer
    # whose kernel acknowledges late (softirqs, or its socket's owner, starved of CPU) is not cut and
    # redialled, which would load everyone further. A dead peer is then seen within heartbeat_interval +
    # tcp_user_timeout_patient (4 s) instead of 1.5 s: slower detection, not churn.
    late_limit: float = 1.0
    patience_hold: float = 10.0
    tcp_user_timeout_patient: float = 3.0
    handshake_timeout: float = 5.0
    gossip_delay: float = 0.05       # coalescing window for topology deltas
    gossip_min_interval: float = 0.5 # at most two flushes a second: bounds the storm when many peers join
    summary_interval: float = 2.0    # pull anything missed from a random neighbour
    app_max_hops: int = 64          # a routed application message dies after this many relays
    unreachable_gc_after: float = 60.0
    failed_inbound_keep: float = 60.0
    max_peers: int = DEFAULT_MAX_PEERS  # peers in the topology; also entries in one gossip message
    # Inbound connections still in their handshake have not proved anything: they get their own slots,
    # apart from conn_limit, so idle sockets cannot keep real peers out.
    preauth_per_source: int = 4
    preauth_total: int = 32          # over it, the oldest handshake is dropped for the newcomer
    auth_fail_limit: int = 10        # this many failed handshakes from one address within ...
    auth_fail_window: float = 60.0
    auth_backoff: float = 60.0       # ... and its new connections are closed at once for this long
    # A handshake with a password costs ~10 ms of CPU (SPAKE2) before the peer has proved anything:
    # new inbound connections are rate-limited per source and in total (token buckets), so a
    # connect/close loop cannot burn the host's CPU. Real peers reconnect rarely (backoff from 0.5 s).
    accept_rate_per_source: float = 2.0
    accept_burst_per_source: int = 8
    accept_rate_total: float = 40.0
    accept_burst_total: int = 80


MAX_APP_CHANNEL = 64
ROUTE_TREE_BUDGET = 200_000          # BFS steps one gossip flush may spend on per-origin broadcast trees
RTT_MAX = 60.0
DELTA_FEATURE = "topo_delta"         # hello feature: the peer takes GOSSIP_DELTA messages
SPAN_FEATURE = "topo_span"           # hello feature: its deltas are complete (Topology.apply_deltas span)
SENT_CHAIN_STEPS = 128               # deltas kept per entry to answer summaries that are behind
PENDING_STEPS = 64                   # deltas queued per entry between flushes before they are composed into one
REPAIR_INTERVAL = 1.0                # at most one summary a second asks a neighbour for entries a delta missed
HOUSEKEEPING = 1.0                   # seconds between expiry passes (refused inbound, auth failures, unreachable GC)
_LOG_INTERVAL = 60.0


class TokenBucket:
    """Rate limit per key (and one shared bucket): ``take`` says whether an event may happen now."""

    def __init__(self, rate: float, burst: int, max_keys: int = 4096) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._keys: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, now: float) -> bool:
        tokens, at = self._keys.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        ok = tokens >= 1.0
        self._keys[key] = (tokens - 1.0 if ok else tokens, now)  # re-inserted: least recent go first
        if len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]
        return ok


class Throttle:
    """At most one log line per key per interval; remembers how many it held back. Bounded keys."""

    def __init__(self, interval: float = _LOG_INTERVAL, max_keys: int = 1024) -> None:
        self.interval, self.max_keys = interval, max_keys
        self._keys: dict[str, list] = {}  # key -> [last logged, held back since]

    def allow(self, key: str, now: float) -> int | None:
        """None: stay quiet; else log now, mentioning the returned number of lines held back."""
        st = self._keys.get(key)
        if st is not None and now - st[0] < self.interval:
            st[1] += 1
            return None
        held = st[1] if st else 0
        self._keys.pop(key, None)
        self._keys[key] = [now, 0]
        if len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]
        return held


# --- actions returned to the adapter -------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    conn_id: int
    data: bytes


@dataclass(frozen=True)
class Close:
    conn_id: int
    reason: str


@dataclass(frozen=True)
class Dial:
    conn_id: int
    host: str
    port: int
    address: str


@dataclass(frozen=True)
class Patience:
    """Give the connection's socket the patient user timeout (MeshConfig.tcp_user_timeout_patient), or the
    usual one again."""
    conn_id: int
    patient: bool


Action = Send | Close | Dial | Patience
Output = Action | Event   # what every entry point returns, in order: actions to execute, events to dispatch


def _app_body(channel: str, src: str, dest: str, hops: int, payload: bytes) -> bytes:
    return encode_json([channel, src, dest, hops]) + b"\n" + payload


def gossip_body(entries) -> bytes | None:
    """The GOSSIP message body, built from each entry's cached encoding."""
    parts = [e.wire_json for e in entries]
    return b'{"peers":[' + b",".join(parts) + b"]}" if parts else None


def gossip_bodies(entries, max_bytes: int = MAX_GOSSIP_BODY, key: bytes = b"peers") -> list[bytes]:
    """GOSSIP bodies of at most about ``max_bytes`` each (a big topology does not fit one frame); with
    ``key`` b"deltas", GOSSIP_DELTA bodies of PeerDeltas."""
    bodies: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for e in entries:
        n = len(e.wire_json) + 1
        if batch and size + n > max_bytes:
            bodies.append(b'{"' + key + b'":[' + b",".join(batch) + b"]}")
            batch, size = [], 0
        batch.append(e.wire_json)
        size += n
    if batch:
        bodies.append(b'{"' + key + b'":[' + b",".join(batch) + b"]}")
    return bodies


class ConnState(StrEnum):
    CONNECTING = "connecting"
    HANDSHAKE = "handshake"
    PENDING = "pending"          # handshake done, our heartbeat not yet echoed
    ESTABLISHED = "established"


@dataclass
class Conn:
    id: int
    outbound: bool
    address: str                     # outbound: the dialled target; inbound: observed ip:port
    remote_ip: str = ""
    created: float = 0.0
    state: ConnState = ConnState.CONNECTING
    handshake: Handshake | None = None
    channel: Channel | None = None
    session: Session | None = None   # keys for the data plane's channels of this connection
    remote: RemoteHello | None = None
    dial_address: str = ""           # the remote's listen address, known after its hello
    last_recv: float = 0.0
    last_hb: float = 0.0
    peer_hb: tuple[float, float] = (0.0, 0.0)  # (peer's timestamp, when we got it): echoed back
    rtt: float | None = None
    last_repair: float = -1e9        # when we last asked this neighbour for entries a delta of its missed
    synced: bool = False             # we answered its summary: until then it gets no flush (the answer has it all)
    timer_due: float = 0.0           # its entry in Mesh._timers that counts (older ones are stale)
    quiet: float = 0.0               # longest silence between its messages since its last heartbeat (health)
    patient_until: float = 0.0       # its peer's heartbeats came late: patient limits until then
    patient: bool = False            # what its socket was last told (Patience)

    @property
    def live(self) -> bool:
        return self.state in (ConnState.PENDING, ConnState.ESTABLISHED)


class Mesh:
    def __init__(self, identity: LocalIdentity, incarnation: int, config: MeshConfig | None = None,
                 rng: random.Random | None = None) -> None:
        # Every peer here takes topology deltas; the hello says so, so an older peer gets whole entries.
        self.identity = replace(identity, features={**identity.features, DELTA_FEATURE: 1, SPAN_FEATURE: 1})
        self.config = config or MeshConfig()
        self._rng = rng or random.Random()
        self.conns: dict[int, Conn] = {}
        self._next_id = 1
        self.connmaker = ConnectionMaker(self._rng)
        self.topology = Topology(PeerEntry(identity.name, identity.nickname, identity.uid, incarnation, 1),
                                 self.config.max_peers)
        self._base_incarnation = incarnation
        self._t0: float | None = None   # our first event: incarnations of others are judged against it
        self.routes = RouteTable({identity.name: []}, identity.name)
        self.routes_version = 0
        self._pending_gossip: dict[str, PeerEntry] = {}
        # Per pending entry, the deltas from the version of the last flush to it, one per version step
        # (None: only the whole entry will do). A chain, not one merged delta: a neighbour that already
        # holds an intermediate version (from another path) can still apply the rest.
        self._pending_deltas: dict[str, list[PeerDelta] | None] = {}
        # The recent deltas sent per entry (they end at the entry's current version, else they are useless):
        # a summary some versions behind (a new neighbour while many peers join) is answered with them.
        self._sent_chain: dict[str, list[PeerDelta]] = {}
        self._gossip_source: dict[str, str] = {}
        self._gossip_due: float | None = None
        self._next_summary: float | None = None
        self._unreachable_since: dict[str, float] = {}
        self._failed_inbound: deque[tuple[float, str, str]] = deque(maxlen=64)
        self._auth_failures: dict[str, deque[float]] = {}  # source IP -> times of failed handshakes
        self._backoff: dict[str, float] = {}                # source IP -> refused until
        self._throttle = Throttle()
        cfg = self.config
        self._accept_source = TokenBucket(cfg.accept_rate_per_source, cfg.accept_burst_per_source)
        self._accept_total = TokenBucket(cfg.accept_rate_total, cfg.accept_burst_total, max_keys=1)
        self._inbound_log_budget = TokenBucket(20 / 60, 20, max_keys=1)
        # Protocol errors per peer name ("unknown" before a handshake); bounded key set.
        self.protocol_errors: dict[str, int] = {}
        self._addr_peer: dict[str, str] = {}
        # Peers we have had a connection with (forgotten with their topology entry): a lost connection to one
        # is redialled at once, whichever name is lower (it may be restarting; see DISCOVERED_DEFER).
        self._met: set[str] = set()
        self._topo_dirty = False
        self._last_tick = 0.0
        self._patient_until = 0.0     # our own timers ran late: every connection patient until then
        # Per-connection deadlines (heartbeat due, silence limit, handshake limit) as a heap of
        # (due, conn id): a tick touches only the connections whose time has come, not all N of them.
        self._timers: list[tuple[float, int]] = []
        self._next_housekeeping = 0.0
        # The dial pass looks at every target: it runs when a target is due, the targets changed
        # (connmaker.version) or a connection came or went (_dial_check), not on every tick.
        self._dial_check = True
        self._dial_version = -1
        self._next_dial = 0.0
        self._last_flush = -1e9
        self._peers_seen: tuple[frozenset[str], frozenset[str], frozenset[str]] = (frozenset(),) * 3
        self.counters = {"gossip_sent": 0, "gossip_received": 0, "connections_refused": 0,
                         "preauth_refused": 0, "preauth_evicted": 0, "backoff_refused": 0,
                         "internal_errors": 0, "rate_refused": 0, "gossip_delta_gaps": 0,
                         "patience_periods": 0}

    # --- operator commands -----------------------------------------------------------------------
    def connect(self, addresses: list[str], now: float, replace: bool = False) -> list[Output]:
        normalised = [format_address(*parse_peer_address(a)) for a in addresses]
        actions: list[Output] = []
        if replace:
            for addr in self.connmaker.explicit():
                if addr not in normalised:
                    actions += self.forget([addr], now)
        for addr in normalised:
            self.connmaker.add(addr, explicit=True, now=now)
        return actions + self.tick(now)

    def forget(self, addresses: list[str], now: float) -> list[Output]:
        """Stop dialling these targets (existing connections stay up, like weave's forget)."""
        for a in addresses:
            addr = format_address(*parse_peer_address(a))
            t = self.connmaker.targets.get(addr)
            if t is not None and t.explicit:
                self.connmaker.remove(addr)
        return []

    def send_datapath(self, peer: str, body: bytes) -> list[Output]:
        """A data-plane message to a directly connected peer (dropped if there is no connection)."""
        for c in self.live_connections():
            if c.remote.name == peer and c.channel is not None:
                return [Send(c.id, c.channel.encode(MsgType.DATAPATH, body))]
        return []

    def send_app(self, channel: str, payload: bytes, dest: str | None = None,
                 exclude: frozenset[str] = frozenset()) -> list[Output]:
        """An application message: to every neighbour but those in `exclude` (``dest`` None: gossip, which
        the receivers merge and pass on themselves if it taught them something), or routed hop by hop to
        ``dest``. Dropped (no actions) when ``dest`` is unreachable: application protocols retry."""
        if dest is None:
            body = _app_body(channel, self.identity.name, "", 0, payload)
            return [Send(c.id, c.channel.encode(MsgType.APP, body))
                    for c in self.live_connections() if c.channel is not None and c.remote.name not in exclude]
        if dest == self.identity.name:
            return self._deliver_app(channel, dest, payload)
        return self._route_app(channel, self.identity.name, dest, self.config.app_max_hops, payload)

    def _route_app(self, channel: str, src: str, dest: str, hops: int, payload: bytes) -> list[Output]:
        hop = self.routes.unicast.get(dest)
        for c in self.live_connections():
            if c.remote.name == hop and c.channel is not None:
                return [Send(c.id, c.channel.encode(MsgType.APP, _app_body(channel, src, dest, hops, payload)))]
        return []

    def _on_app(self, conn: Conn, body: bytes) -> list[Output]:
        head, sep, payload = body.partition(b"\n")
        header = decode_json(head, max_size=1024)
        if not sep or not (isinstance(header, list) and len(header) == 4 and all(isinstance(x, str)
                                                                                 for x in header[:3])
                           and isinstance(header[3], int) and not isinstance(header[3], bool)):
            raise ProtocolError("bad application message")
        channel, src, dest, hops = header
        if not 0 < len(channel) <= MAX_APP_CHANNEL or not 0 <= hops <= self.config.app_max_hops:
            raise ProtocolError(f"bad application message: channel or hops ({hops}) out of range")
        try:
            src, dest = parse_peer_name(src), parse_peer_name(dest) if dest else ""
        except ValueError:
            raise ProtocolError("bad application message: bad peer name") from None
        assert conn.remote is not None
        # Who sent it is part of what applications trust (IPAM ownership, DNS records): a neighbour's
        # own message must come from that neighbour, a routed one at least from a peer we know of.
        if not dest and src != conn.remote.name:
            raise ProtocolError(f"application message from {conn.remote.name} claims to come from {src}")
        if dest and src not in self.topology.peers:
            raise ProtocolError(f"routed application message from unknown peer {src}")
        if dest and dest != self.identity.name:
            return self._route_app(channel, src, dest, hops - 1, payload) if hops > 1 else []
        return self._deliver_app(channel, src, payload, conn.id)

    def _deliver_app(self, channel: str, src: str, payload: bytes, conn_id: int = 0) -> list[Output]:
        return [AppMessage(channel, src, payload, conn_id)]

    def reject(self, conn_id: int, reason: str, now: float, internal: bool = False) -> list[Output]:
        """A user of an event found what the connection delivered unacceptable (a message that does not
        parse, or a bug handling it: `internal`): counted against the peer like our own protocol errors,
        and that connection alone is closed."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return []
        if internal:
            self.counters["internal_errors"] += 1
        return self._protocol_error(conn, reason, now)

    def live_connections(self) -> list[Conn]:
        return [c for c in self.conns.values() if c.live and c.remote is not None]

    # --- connection events ----------------------------------------------------------------------
    def accept(self, remote_ip: str, remote_port: int, now: float) -> tuple[int, list[Output]]:
        conn = self._new_conn(False, format_address(remote_ip, remote_port), remote_ip, now)
        cfg = self.config
        until = self._backoff.get(remote_ip)
        if until is not None and now < until:
            self.counters["backoff_refused"] += 1
            return conn.id, self._fail(conn, f"too many failed handshakes from {remote_ip}, refused for "
                                             f"{until - now:.0f}s more", now, counted=False)
        if not (self._accept_source.take(remote_ip, now) and self._accept_total.take("", now)):
            self.counters["rate_refused"] += 1  # _fail logs once a minute per source
            return conn.id, self._fail(conn, "new connections arrive too fast", now, counted=False)
        if self._slots_used(conn) >= cfg.conn_limit:  # dials in progress count too, handshakes do not
            return conn.id, self._fail(conn, f"connection limit {cfg.conn_limit} reached", now)
        preauth = [c for c in self.conns.values()
                   if c is not conn and not c.outbound and c.state == ConnState.HANDSHAKE]
        if sum(1 for c in preauth if c.remote_ip == remote_ip) >= cfg.preauth_per_source:
            self.counters["preauth_refused"] += 1
            return conn.id, self._fail(conn, f"{cfg.preauth_per_source} handshakes from {remote_ip} already "
                                             "in progress", now, counted=False)
        actions: list[Output] = []
        if len(preauth) >= cfg.preauth_total:
            # Make room by dropping the oldest: a flood then only shortens everyone's handshake window,
            # and a real peer (one round trip) still gets through.
            self.counters["preauth_evicted"] += 1
            oldest = min(preauth, key=lambda c: (c.created, c.id))
            actions += self._fail(oldest, f"{cfg.preauth_total} handshakes in progress: dropped the oldest",
                                  now, counted=False)
        return conn.id, actions + self._start_handshake(conn, now)

    def _slots_used(self, conn: Conn | None = None) -> int:
        """Connections that count against conn_limit: ours (dials) and authenticated ones."""
        return sum(1 for c in self.conns.values() if c is not conn and (c.outbound or c.state != ConnState.HANDSHAKE))

    def dial_succeeded(self, conn_id: int, remote_ip: str, now: float) -> list[Output]:
        conn = self.conns.get(conn_id)
        if conn is None:
            return [Close(conn_id, "connection no longer wanted")]
        conn.remote_ip = remote_ip
        return self._start_handshake(conn, now)

    def dial_failed(self, conn_id: int, reason: str, now: float) -> list[Output]:
        conn = self.conns.pop(conn_id, None)
        if conn is not None:
            self.connmaker.failed(conn.address, reason, now)
            return [ConnectionFailed(conn.address, reason, True)]
        return []

    def data_received(self, conn_id: int, data: bytes, now: float) -> list[Output]:
        conn = self.conns.get(conn_id)
        if conn is None:
            return []
        try:
            if conn.handshake is not None:
                return self._handshake_data(conn, data, now)
            return self._messages(conn, data, now)
        except HandshakeRefused as e:
            owed = [Send(conn.id, e.output)] if e.output else []
            self._auth_failed(conn, now)
            return owed + self._fail(conn, str(e), now, refused=True)
        except ProtocolError as e:
            return self._protocol_error(conn, str(e), now)
        except Exception:  # noqa: BLE001 - a bug (ours or a handler's) costs this connection, not the router
            self.counters["internal_errors"] += 1
            if self._throttle.allow("internal-error", now) is not None:
                log.exception("connection %s: internal error handling its data; closing it", conn.address)
            return self._protocol_error(conn, "internal error", now)

    def connection_lost(self, conn_id: int, reason: str, now: float, link_failed: bool = False) -> list[Output]:
        """The adapter's socket ended: closed by the peer, or `link_failed` (the kernel timed it out)."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return []
        return self._drop(conn, reason or "connection closed by peer", now, send_close=False, link_failed=link_failed)

    # --- time ---------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Output]:
        cfg = self.config
        actions: list[Output] = []
        if self._t0 is None:
            self._t0 = now
        # If we ourselves were not scheduled for a while (an overloaded host), the silence we see is
        # ours, not our peers': don't count it against them, or a busy host drops every connection.
        stalled = now - self._last_tick - cfg.heartbeat_interval if self._last_tick else 0.0
        self._last_tick = now
        if stalled > 0:
            for conn in self.conns.values():
                conn.last_recv += stalled
        if self._timers and now - self._timers[0][0] > cfg.late_limit:
            actions += self._starved(now, now - self._timers[0][0])
        actions += self._run_timers(now)
        if self._topo_dirty:
            actions += self._recompute(now)
        if self._gossip_due is not None and now >= self._gossip_due:
            actions += self._flush_gossip(now)
        if self._next_summary is None or now >= self._next_summary:
            self._next_summary = due_after(now, cfg.summary_interval * self._rng.uniform(0.5, 1.5))
            live = [c for c in self.conns.values() if c.live]
            if live:
                actions.append(self._send_summary(self._rng.choice(live)))
        if now >= self._next_housekeeping:   # expiries a second late cost nothing: not on every tick
            self._next_housekeeping = due_after(now, HOUSEKEEPING)
            if self._gc_unreachable(now):
                actions += self._peers_event()
            while self._failed_inbound and now - self._failed_inbound[0][0] >= cfg.failed_inbound_keep:
                self._failed_inbound.popleft()
            self._expire_auth_failures(now)
            actions += self._patience(now)
        actions += self._dial_due(now)
        return actions

    def _starved(self, now: float, late: float) -> list[Output]:
        """Our timers ran `late` seconds late: this host is overloaded, every connection gets patient."""
        if now >= self._patient_until:
            self.counters["patience_periods"] += 1
            log.info("timers ran %.1fs late (an overloaded host): patient TCP limits on every connection "
                     "for %gs", late, self.config.patience_hold)
        self._patient_until = now + self.config.patience_hold
        return self._patience(now)

    def _patience(self, now: float) -> list[Output]:
        """Tell each live connection's socket the limits it should have now (only the changes)."""
        return [a for conn in self.conns.values() if (a := self._tell_patience(conn, now)) is not None]

    def _tell_patience(self, conn: Conn, now: float) -> Patience | None:
        want = conn.live and now < max(self._patient_until, conn.patient_until)
        if want == conn.patient:
            return None
        conn.patient = want
        return Patience(conn.id, want)

    def next_deadline(self) -> float:
        """When `tick` next has work (0.0: at once). The router's ticker sleeps until the earliest of its
        subsystems' deadlines; an event that makes work (a topology change, gossip queued, a connection up or
        down) moves this one earlier, and the ticker is woken. O(1): it is asked after every event."""
        if self._topo_dirty or self._next_summary is None or self._dial_check \
                or self.connmaker.version != self._dial_version:
            return 0.0
        due = min(self._next_summary, self._next_dial, self._next_housekeeping)
        if self._gossip_due is not None and self._gossip_due < due:
            due = self._gossip_due
        if self._timers and self._timers[0][0] < due:
            due = self._timers[0][0]
        return due

    def _heartbeat_slot(self, t: float) -> float:
        """Heartbeats leave on a grid of one interval (never later than due, at most one interval early
        once, when a connection joins): all of them in the same tick, so an idle router wakes once per
        interval for its heartbeats however many connections it has, not once per connection."""
        interval = self.config.heartbeat_interval
        return math.floor(t / interval + 1e-6) * interval

    def _schedule(self, conn: Conn, due: float) -> None:
        conn.timer_due = due
        heapq.heappush(self._timers, (due, conn.id))

    def _run_timers(self, now: float) -> list[Output]:
        """The connections whose deadline has come: handshake limit, silence limit, heartbeat due.
        Deadlines move lazily (a message received only sets last_recv): a timer that fires early is
        re-armed at the real deadline. Each connection is looked at once per tick at most."""
        cfg = self.config
        actions: list[Output] = []
        rearm: list[Conn] = []
        while self._timers and self._timers[0][0] <= now:
            due, cid = heapq.heappop(self._timers)
            conn = self.conns.get(cid)
            if conn is None or conn.timer_due != due:
                continue  # closed, or re-armed since
            if conn.state == ConnState.HANDSHAKE:
                if now - conn.created > cfg.handshake_timeout:
                    actions += self._fail(conn, "handshake timed out", now)
                else:
                    rearm.append(conn)
            elif conn.live:
                if now - conn.last_recv > cfg.heartbeat_timeout:
                    actions += self._drop(conn, f"no heartbeat for {now - conn.last_recv:.1f}s", now)
                    continue
                if now >= self._heartbeat_slot(conn.last_hb + cfg.heartbeat_interval):
                    actions.append(self._heartbeat(conn, now))
                rearm.append(conn)
        for conn in rearm:  # after the loop: a deadline equal to now waits for the next tick, as before
            if conn.state == ConnState.HANDSHAKE:
                self._schedule(conn, conn.created + cfg.handshake_timeout)
            else:
                self._schedule(conn, min(self._heartbeat_slot(conn.last_hb + cfg.heartbeat_interval),
                                         conn.last_recv + cfg.heartbeat_timeout))
        return actions

    # --- handshake ----------------------------------------------------------------------------
    def _new_conn(self, outbound: bool, address: str, remote_ip: str, now: float) -> Conn:
        conn = Conn(self._next_id, outbound, address, remote_ip, created=now)
        self._next_id += 1
        self.conns[conn.id] = conn
        return conn

    def _start_handshake(self, conn: Conn, now: float) -> list[Output]:
        conn.state, conn.created = ConnState.HANDSHAKE, now
        conn.handshake = Handshake(self.identity, conn.outbound, self.config.password_hash)
        self._schedule(conn, now + self.config.handshake_timeout)
        return [Send(conn.id, conn.handshake.initial_bytes())]

    def _handshake_data(self, conn: Conn, data: bytes, now: float) -> list[Output]:
        assert conn.handshake is not None
        out, done = conn.handshake.receive_data(data)
        actions: list[Output] = [Send(conn.id, out)] if out else []
        if done is not None:
            actions += self._handshake_done(conn, done, now)
        return actions

    def _handshake_done(self, conn: Conn, done: HandshakeDone, now: float) -> list[Output]:
        remote = done.remote
        conn.handshake, conn.remote = None, remote
        conn.dial_address = conn.address if conn.outbound else format_address(conn.remote_ip, remote.port)
        self._addr_peer[conn.dial_address] = remote.name
        self._met.add(remote.name)
        if len(self._met) > 2 * self.config.max_peers:   # names outside the topology (refused later, gone)
            self._met &= set(self.topology.peers)
        actions: list[Output] = []
        for other in list(self.conns.values()):
            if other is conn or not other.live or other.remote is None or other.remote.name != remote.name:
                continue
            if other.remote.uid != remote.uid:
                actions += self._drop(other, "peer restarted", now)
            elif self._initiator(conn) < self._initiator(other):
                actions += self._drop(other, DUPLICATE, now)
            else:
                self.conns.pop(conn.id)
                if conn.outbound:
                    self.connmaker.connected(conn.address)
                return actions + [Close(conn.id, DUPLICATE)]
        if not conn.outbound and self._slots_used(conn) >= self.config.conn_limit:
            return actions + self._fail(conn, f"connection limit {self.config.conn_limit} reached", now)
        conn.state, conn.last_recv, conn.last_hb = ConnState.PENDING, now, now
        self._dial_check = True
        conn.channel = Channel(done.session)
        conn.session = done.session
        log.info("connection %s %s %s(%s) established handshake%s", "to" if conn.outbound else "from",
                 conn.address, remote.name, remote.nickname, " (encrypted)" if done.session else "")
        if conn.outbound:
            self.connmaker.connected(conn.address)
        actions.append(self._heartbeat(conn, now))
        self._schedule(conn, now + self.config.heartbeat_interval)
        actions.append(ConnectionUp(remote.name, conn.id, conn.remote_ip, remote.port, conn.outbound,
                                    {k: v for k, v in remote.features.items() if k not in (DELTA_FEATURE,
                                                                                           SPAN_FEATURE)},
                                    done.session.keys_for(SLEEVE_KEYS) if done.session else None))
        self._update_ourself(now)
        # A new neighbour learns what we have that it lacks (it answers our summary); then deltas.
        actions.append(self._send_summary(conn))
        if done.rest:
            actions += self._messages(conn, done.rest, now)
        self._topology_changed(now)
        return actions

    def _heartbeat(self, conn: Conn, now: float) -> Send:
        assert conn.channel is not None
        conn.last_hb = now
        ts, got = conn.peer_hb
        body = encode_heartbeat(now, ts, now - got if ts else 0.0)
        return Send(conn.id, conn.channel.encode(MsgType.HEARTBEAT, body))

    def _initiator(self, conn: Conn) -> str:
        assert conn.remote is not None
        return self.identity.name if conn.outbound else conn.remote.name

    # --- messages -----------------------------------------------------------------------------
    def _messages(self, conn: Conn, data: bytes, now: float) -> list[Output]:
        assert conn.channel is not None
        actions: list[Output] = []
        changed = False
        for kind, body in conn.channel.feed(data):
            if now - conn.last_recv > conn.quiet:
                conn.quiet = now - conn.last_recv
            conn.last_recv = now
            if kind == MsgType.HEARTBEAT:
                sent_at, echo, held = decode_heartbeat(body)
                first = conn.peer_hb[0] == 0.0
                if not first and now - conn.peer_hb[1] > self.config.heartbeat_timeout / 2:
                    conn.patient_until = now + self.config.patience_hold   # the peer (or its host) is late
                    if (told := self._tell_patience(conn, now)) is not None:
                        actions.append(told)
                conn.peer_hb = (sent_at, now)
                quiet, conn.quiet = conn.quiet, 0.0
                if echo == 0.0:
                    actions.append(Heartbeat(conn.remote.name, conn.id, None, quiet))
                    if first:  # the peer has not heard us yet: answer now rather than next interval
                        actions.append(self._heartbeat(conn, now))
                    continue
                conn.rtt = min(max(0.0, now - echo - held), RTT_MAX)  # the echo is the peer's claim
                actions.append(Heartbeat(conn.remote.name, conn.id, conn.rtt, quiet))
                if conn.state == ConnState.PENDING:
                    conn.state = ConnState.ESTABLISHED
                    self._update_ourself(now)
                    changed = True
            elif kind == MsgType.GOSSIP:
                changed |= self._on_gossip(conn, body, now)
            elif kind == MsgType.GOSSIP_DELTA:
                learnt, repair = self._on_delta(conn, body, now)
                changed |= learnt
                actions += repair
            elif kind == MsgType.DATAPATH:
                if conn.remote is not None:
                    actions.append(DatapathMessage(conn.remote.name, body))
            elif kind == MsgType.SUMMARY:
                actions += self._on_summary(conn, body)
            elif kind == MsgType.APP:
                actions += self._on_app(conn, body)
            elif kind == MsgType.CLOSING:
                reason = body.decode(errors="replace")[:200]
                return actions + self._drop(conn, f"closed by peer: {reason}", now, send_close=False)
        if changed:
            self._topology_changed(now)
        return actions

    def _on_gossip(self, conn: Conn, body: bytes, now: float) -> bool:
        msg = decode_json(body)
        if not isinstance(msg, dict) or not isinstance(msg.get("peers"), list):
            raise ProtocolError("bad gossip message")
        self.counters["gossip_received"] += 1
        topo = self.topology
        before = dict(topo.refused)
        old = dict(topo.peers)   # what each accepted entry replaces: the base of the delta passed on
        accepted = topo.merge_wire(msg["peers"], self._max_incarnation(now))
        if topo.refused != before and self._throttle.allow("gossip-refused", now) is not None:
            log.warning("gossip from %s: entries skipped (totals: %d implausibly far ahead, %d over the "
                        "limit of %d peers)", self._who(conn), topo.refused["ahead"], topo.refused["full"],
                        topo.max_peers)
        for e in accepted:
            if e.name == self.identity.name:  # our bumped entry: everyone needs it, the sender first
                if self._throttle.allow("reclaim", now) is not None:
                    log.warning("gossip from %s carries a newer entry for us (a previous life of ours, or "
                                "another peer with our name?): bumped ours past it", self._who(conn))
                self._queue_gossip(e, now)
            else:
                self._queue_gossip(e, now, source=conn.remote.name if conn.remote else "", base=old.get(e.name))
        return bool(accepted)

    def _on_delta(self, conn: Conn, body: bytes, now: float) -> tuple[bool, list[Output]]:
        """Deltas of entries: applied where we hold their base, passed on like whole entries. A gap
        (we hold another version) is repaired at once: our summary makes the neighbour send what we lack."""
        msg = decode_json(body)
        cap = self.config.max_peers
        if not isinstance(msg, dict) or not isinstance(msg.get("deltas"), list) or len(msg["deltas"]) > cap:
            raise ProtocolError("bad topology delta message")
        deltas = [PeerDelta.from_wire(w, cap) for w in msg["deltas"]]
        self.counters["gossip_received"] += 1
        span = conn.remote is not None and conn.remote.features.get(SPAN_FEATURE) == 1
        accepted, gaps = self.topology.apply_deltas(deltas, self._max_incarnation(now), span)
        for e, chain in accepted:
            if e.name == self.identity.name:
                self._queue_gossip(e, now)
            else:
                # What we pass on is complete (SPAN_FEATURE): an older router's steps may not be.
                ok = span or all(d.version == d.base + 1 for d in chain)
                self._queue_gossip(e, now, source=conn.remote.name if conn.remote else "",
                                   chain=chain if ok else None)
        repair: list[Output] = []
        if gaps:
            self.counters["gossip_delta_gaps"] += gaps
            if now - conn.last_repair >= REPAIR_INTERVAL:
                conn.last_repair = now
                repair.append(self._send_summary(conn))
        return bool(accepted), repair

    def _max_incarnation(self, now: float) -> int:
        """Incarnations are start times in ms, like ours: a day beyond our clock is not a real peer's."""
        if self._t0 is None:
            self._t0 = now
        return self._base_incarnation + int(max(0.0, now - self._t0) * 1000) + DAY_MS

    def _on_summary(self, conn: Conn, body: bytes) -> list[Output]:
        summary = decode_json(body)
        if not isinstance(summary, dict) or len(summary) > self.config.max_peers:
            raise ProtocolError("bad gossip summary")
        for theirs in summary.values():
            if not (isinstance(theirs, list) and len(theirs) == 2
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in theirs)):
                raise ProtocolError("bad gossip summary: values must be [incarnation, version]")
        newer, deltas = [], []
        takes_deltas = conn.remote is not None and conn.remote.features.get(DELTA_FEATURE) == 1
        span = takes_deltas and conn.remote is not None and conn.remote.features.get(SPAN_FEATURE) == 1
        for name, e in self.topology.peers.items():
            theirs = summary.get(name)
            if theirs is None or tuple(theirs) < e.order:
                one = self._answer_delta(e, theirs, span) if takes_deltas and theirs is not None else None
                if one is not None:
                    deltas.append(one)
                else:
                    newer.append(e)
        conn.synced = True
        return self._send_deltas(conn, deltas) + self._send_gossip(conn, newer)

    def _answer_delta(self, e: PeerEntry, theirs: list[int], span: bool) -> PeerDelta | None:
        """One delta that brings an asker at version ``theirs`` of ``e`` to ``e`` (None: the whole entry
        must go): the chain we sent and queued since, composed (a record changed in many steps goes
        once); for a peer that applies only on the exact base (no SPAN_FEATURE), also a diff from a
        version we held (Topology.held; exact for that version only, so not for a span peer)."""
        if theirs[0] != e.incarnation:
            return None
        if not span:
            past = self.topology.held(e.name, (theirs[0], theirs[1]))
            one = PeerDelta.between(past, e) if past is not None else None
            if one is not None and one.size <= len(e.connections):
                return one
        chain = self._chain_to_current(e.name)
        if not chain or chain[-1].order != e.order:
            return None
        suffix = [d for d in chain if d.version > theirs[1]]
        # A span peer applies a complete delta from any version in between: the suffix may start before theirs.
        if not suffix or not (suffix[0].base == theirs[1] or span and suffix[0].base < theirs[1]):
            return None
        try:
            one = PeerDelta.compose(suffix)
        except ValueError:
            return None
        return one if one.size <= len(e.connections) else None

    def _chain_to_current(self, name: str) -> list[PeerDelta]:
        """The deltas we know of that lead up to the entry's current version (sent, then pending)."""
        sent = self._sent_chain.get(name, [])
        if name not in self._pending_gossip:
            return sent
        pending = self._pending_deltas.get(name) or []
        if sent and pending and sent[-1].version == pending[0].base:
            return sent + pending
        return pending

    # --- gossip -------------------------------------------------------------------------------
    def _send_summary(self, conn: Conn) -> Send:
        assert conn.channel is not None
        summary = {n: [e.incarnation, e.version] for n, e in self.topology.peers.items()}
        return Send(conn.id, conn.channel.encode(MsgType.SUMMARY, encode_json(summary)))

    def _queue_gossip(self, entry: PeerEntry, now: float, urgent: bool = False, source: str = "",
                      base: PeerEntry | None = None, chain: list[PeerDelta] | None = None) -> None:
        """Queue an entry; `urgent` (we lost a connection) skips the rate limit: others must stop
        routing through a dead link as soon as we know. `source`: the neighbour it came from (it
        has it already, so it is not sent back). `base`: the entry it replaces, or `chain`: the deltas
        that made it; neighbours that hold the entry as of the last flush get only the differences."""
        pending = self._pending_deltas.get(entry.name, []) if entry.name in self._pending_gossip else []
        if pending is not None:
            if chain is None:
                d = PeerDelta.between(base, entry) if base is not None else None
                # Across one version only: a diff across several may miss a record changed and changed
                # back in between, and what we send must be complete (SPAN_FEATURE).
                chain = [d] if d is not None and d.version == d.base + 1 else None
            if not chain or (pending and pending[-1].version != chain[0].base):
                pending = None
            else:
                pending = pending + chain
                if len(pending) > PENDING_STEPS:
                    # A join storm changes an entry dozens of times between flushes: one composed step, not
                    # the whole entry to every neighbour (one that holds a version in between applies it
                    # to the flushed version it held before: Topology.held).
                    pending = [PeerDelta.compose(pending)]
        self._pending_deltas[entry.name] = pending
        self._pending_gossip[entry.name] = entry
        if source:
            self._gossip_source[entry.name] = source
        else:
            self._gossip_source.pop(entry.name, None)
        cfg = self.config
        due = now + cfg.gossip_delay if urgent else max(now + cfg.gossip_delay,
                                                         self._last_flush + cfg.gossip_min_interval)
        if self._gossip_due is None or due < self._gossip_due:
            self._gossip_due = due

    def _flush_gossip(self, now: float) -> list[Output]:
        """Send queued entries: ours to every neighbour, others' along their owner's broadcast tree,
        so a dense mesh does not receive each update once per neighbour. The periodic summary
        exchange repairs whatever a tree that was still changing missed."""
        live = {c.remote.name: c for c in self.live_connections()}
        reachable = self.routes.reachable()
        pending = list(self._pending_gossip.values())
        # Each origin's tree is one BFS over the topology: past a budget (a flood of new entries), send
        # to every neighbour instead; receivers drop what they already have.
        routes = self.routes
        fresh = {e.name for e in pending if e.name in reachable and not routes.cached(e.name)}
        size = len(routes.adj) + sum(len(v) for v in routes.adj.values()) if fresh else 0
        use_trees = len(fresh) * size <= ROUTE_TREE_BUDGET
        per_conn: dict[int, list[PeerEntry]] = {}
        # A neighbour not in our routes yet (its connection not confirmed by both ends) is in no tree:
        # it gets everything directly, or the deltas that follow once it is would all be gaps.
        orphans = [n for n in live if n not in reachable]
        for e in pending:
            if e.name == self.identity.name or e.name not in reachable or not use_trees:
                dests = live.keys()
            else:
                dests = [n for n in routes.broadcast(e.name) if n in live] + orphans
            src = self._gossip_source.get(e.name)
            for n in dests:
                if n != src:
                    per_conn.setdefault(live[n].id, []).append(e)
        # A chain goes instead of the entry where it is smaller (a join, a lost link: one record).
        deltas = {}
        for e in pending:
            chain = self._pending_deltas.get(e.name)
            if not chain:
                continue
            if 2 * sum(d.size for d in chain) > len(e.connections) + 1 and len(chain) > 1:
                chain = [PeerDelta.compose(chain)]   # the records that changed, once each
            if 2 * sum(d.size for d in chain) <= len(e.connections) + 1:
                deltas[e.name] = chain
        for e in pending:
            chain = deltas.get(e.name)
            if chain is None:
                self._sent_chain.pop(e.name, None)
                continue
            prev = self._sent_chain.get(e.name)
            if prev and prev[-1].order == (chain[0].incarnation, chain[0].base):
                chain = prev + chain   # the history grows across flushes: a summary far behind still gets deltas
            # ... but stays within about the entry's size (the oldest steps go first): memory within the
            # topology's. Answers compose it into one delta, so a summary far behind during a join storm
            # gets the records that changed since its version, not the whole entry.
            total, budget = sum(d.size for d in chain), len(e.connections) + 8
            while chain and (total > budget or len(chain) > SENT_CHAIN_STEPS):
                total -= chain[0].size
                chain = chain[1:]
            self._sent_chain[e.name] = chain
        self._pending_gossip.clear()
        self._pending_deltas = {}
        self._gossip_source.clear()
        self._gossip_due = None
        self._last_flush = now
        actions: list[Output] = []
        for cid, entries in per_conn.items():
            conn = self.conns[cid]
            if not conn.synced:   # a new neighbour: deltas of entries it has not got yet would be gaps
                continue
            if deltas and conn.remote is not None and conn.remote.features.get(DELTA_FEATURE) == 1:
                actions += self._send_deltas(conn, [d for e in entries for d in deltas.get(e.name, ())])
                entries = [e for e in entries if e.name not in deltas]
            actions += self._send_gossip(conn, entries)
        return actions

    def _send_deltas(self, conn: Conn, deltas: list[PeerDelta]) -> list[Output]:
        if not deltas or conn.channel is None:
            return []
        actions: list[Output] = []
        for body in gossip_bodies(deltas, key=b"deltas"):
            self.counters["gossip_sent"] += 1
            actions.append(Send(conn.id, conn.channel.encode(MsgType.GOSSIP_DELTA, body)))
        return actions

    def _send_gossip(self, conn: Conn, entries: list[PeerEntry]) -> list[Output]:
        if not entries or conn.channel is None:
            return []
        actions: list[Output] = []
        for body in gossip_bodies(entries):
            self.counters["gossip_sent"] += 1
            actions.append(Send(conn.id, conn.channel.encode(MsgType.GOSSIP, body)))
        return actions

    def _update_ourself(self, now: float, urgent: bool = False) -> None:
        recs = sorted((ConnRecord(c.remote.name, c.dial_address, c.outbound, c.state == ConnState.ESTABLISHED)
                       for c in self.live_connections()), key=lambda r: r.name)
        me = self.topology.ourself
        if tuple(recs) == me.connections:
            return
        new = PeerEntry(me.name, me.nickname, me.uid, me.incarnation, me.version + 1, tuple(recs))
        self.topology.set_ourself(new)
        self._queue_gossip(new, now, urgent, base=me)

    def _topology_changed(self, now: float) -> None:
        """Routes are recomputed on the next tick (≤ one tick interval), once per burst of gossip."""
        self._topo_dirty = True

    def _recompute(self, now: float) -> list[Output]:
        self._topo_dirty = False
        events: list[Output] = []
        adj = self.topology.symmetric_neighbours()
        if adj != self.routes.adj:
            self.routes = RouteTable(adj, self.identity.name)
            self.routes_version += 1
            events.append(RoutesChanged(self.routes))
        reachable = self.routes.reachable()
        for n in self.topology.peers:
            if n in reachable:
                self._unreachable_since.pop(n, None)
            else:
                self._unreachable_since.setdefault(n, now)
        if self.config.discovery:
            self._discover(now)
        return events + self._peers_event()

    def _peers_event(self) -> list[Output]:
        """PeersChanged when reachable peers, neighbours or known peers differ from the last one said."""
        routes = self.routes
        seen = (frozenset(routes.unicast), frozenset(routes.neighbours()),
                frozenset(self.topology.peers) - {self.identity.name})
        if seen == self._peers_seen:
            return []
        self._peers_seen = seen
        return [PeersChanged(*seen)]

    def _gc_unreachable(self, now: float) -> bool:
        old = [n for n, t in self._unreachable_since.items() if now - t > self.config.unreachable_gc_after]
        if old:
            for n in old:
                del self._unreachable_since[n]
                self._sent_chain.pop(n, None)
            self._met.difference_update(self.topology.garbage_collect(set(self.topology.peers) - set(old)))
        return bool(old)

    # --- connection making --------------------------------------------------------------------
    def _connected_names(self) -> set[str]:
        return {c.remote.name for c in self.live_connections()}

    def _discover(self, now: float) -> None:
        connected = self._connected_names()
        reachable = self.routes.reachable()
        wanted: dict[str, str] = {}    # address -> the peer there
        limit = self.config.max_peers  # bounds the dial targets whatever the topology claims
        if len(self._addr_peer) > 4 * limit:
            live_addrs = {c.dial_address for c in self.conns.values()}
            self._addr_peer = {a: n for a, n in self._addr_peer.items()
                               if a in self.connmaker.targets or a in live_addrs}
        me, peers, addr_peer = self.identity.name, self.topology.peers, self._addr_peer
        for name in reachable:
            entry = peers.get(name)
            for c in entry.connections if entry else ():
                if c.name != me:
                    if c.address not in addr_peer:
                        addr_peer[c.address] = c.name
                    if c.name not in connected:
                        wanted[c.address] = c.name
        if len(wanted) > limit:
            wanted = {a: wanted[a] for a in sorted(wanted)[:limit]}
        for addr, name in wanted.items():
            # The lower name dials first; a peer we lost a connection to is redialled at once.
            self.connmaker.add(addr, explicit=False, now=now, defer=name < me and name not in self._met)
        for addr, t in list(self.connmaker.targets.items()):
            if not t.explicit and addr not in wanted and t.state != "connecting":
                self.connmaker.remove(addr)

    def _dial_due(self, now: float) -> list[Output]:
        cm = self.connmaker
        if not self._dial_check and cm.version == self._dial_version and now < self._next_dial:
            return []
        actions = self._dial_pass(now)
        self._dial_check, self._dial_version = False, cm.version
        self._next_dial = cm.next_deadline() or float("inf")
        return actions

    def _dial_pass(self, now: float) -> list[Output]:
        actions: list[Output] = []
        connected = self._connected_names()
        live_addrs = {c.dial_address for c in self.conns.values() if c.live}
        for t in self.connmaker.targets.values():
            satisfied = t.address in live_addrs or self._addr_peer.get(t.address) in connected
            if satisfied:
                if t.state != "connected":
                    t.state, t.info = "connected", ""
            elif t.state == "connected":
                t.state, t.next_try = "retrying", now
        for t in self.connmaker.due(now):
            if self._slots_used() >= self.config.conn_limit:
                break
            try:
                host, port = parse_peer_address(t.address)
            except ValueError as e:  # gossip is checked on arrival; still, one bad target must not stop ticks
                self.connmaker.remove(t.address)
                log.warning("dropped dial target: %s", e)
                continue
            conn = self._new_conn(True, t.address, "", now)
            self.connmaker.dialing(t, conn.id)
            actions.append(Dial(conn.id, host, port, t.address))
        return actions

    # --- closing ------------------------------------------------------------------------------
    def _fail(self, conn: Conn, reason: str, now: float, refused: bool = False,
              counted: bool = True) -> list[Output]:
        """A connection that never got going: log why (inbound: once a minute per source address, with
        how many were held back), remember it for status, close it."""
        where = f"{'to' if conn.outbound else 'from'} {conn.address}"
        held = 0 if conn.outbound else self._throttle.allow(f"in:{conn.remote_ip}", now)
        # ... and at most 20 such lines a minute overall, however many addresses a flood comes from.
        if held is not None and (conn.outbound or self._inbound_log_budget.take("", now)):
            log.warning("connection %s refused: %s%s", where, reason,
                        f" ({held} more from {conn.remote_ip} not logged)" if held else "")
        if counted:
            self.counters["connections_refused"] += 1
        self.conns.pop(conn.id, None)
        if conn.outbound:
            self.connmaker.failed(conn.address, reason, now, refused=refused)
        else:
            self._failed_inbound.append((now, conn.address, reason))
        return [Close(conn.id, reason), ConnectionFailed(conn.address, reason, conn.outbound,
                                                         conn.remote.name if conn.remote else "")]

    def _protocol_error(self, conn: Conn, reason: str, now: float) -> list[Output]:
        """The remote broke the protocol: count it against it, close the connection (one log line)."""
        key = conn.remote.name if conn.remote is not None else "unknown"
        if key not in self.protocol_errors and len(self.protocol_errors) >= 256:
            key = "unknown"
        self.protocol_errors[key] = self.protocol_errors.get(key, 0) + 1
        if conn.live:
            return self._drop(conn, f"protocol error: {reason}", now)
        if conn.handshake is not None:
            self._auth_failed(conn, now)
        return self._fail(conn, reason, now)

    def _auth_failed(self, conn: Conn, now: float) -> None:
        """A failed handshake from an inbound address (wrong password, garbage): too many recent ones
        and the address is refused at once for a while."""
        if conn.outbound or not conn.remote_ip:
            return
        cfg = self.config
        ip = conn.remote_ip
        times = self._auth_failures.pop(ip, None) or deque(maxlen=cfg.auth_fail_limit)
        self._auth_failures[ip] = times  # re-inserted: most recent last, the oldest go first
        times.append(now)
        if len(times) >= cfg.auth_fail_limit and now - times[0] <= cfg.auth_fail_window:
            times.clear()
            self._backoff[ip] = now + cfg.auth_backoff
            log.warning("%d failed handshakes from %s within %.0fs: refusing its connections for %.0fs",
                        cfg.auth_fail_limit, ip, cfg.auth_fail_window, cfg.auth_backoff)
        while len(self._auth_failures) > 4096:
            del self._auth_failures[next(iter(self._auth_failures))]
        while len(self._backoff) > 4096:
            del self._backoff[next(iter(self._backoff))]

    def _expire_auth_failures(self, now: float) -> None:
        cfg = self.config
        for ip in [ip for ip, until in self._backoff.items() if now >= until]:
            del self._backoff[ip]
        for ip in [ip for ip, t in self._auth_failures.items() if not t or now - t[-1] > cfg.auth_fail_window]:
            del self._auth_failures[ip]

    def _who(self, conn: Conn) -> str:
        return f"{conn.remote.name}({conn.remote.nickname})" if conn.remote else conn.address

    def _drop(self, conn: Conn, reason: str, now: float, send_close: bool = True,
              link_failed: bool = False) -> list[Output]:
        self.conns.pop(conn.id, None)
        self._dial_check = True
        if conn.remote is None:
            if conn.outbound:
                self.connmaker.failed(conn.address, reason, now)
            return [Close(conn.id, reason)]
        log.info("connection %s %s %s(%s) lost: %s", "to" if conn.outbound else "from", conn.address,
                 conn.remote.name, conn.remote.nickname, reason)
        actions: list[Output] = []
        if send_close and conn.channel is not None:
            actions.append(Send(conn.id, conn.channel.encode(MsgType.CLOSING, reason.encode())))
        actions.append(Close(conn.id, reason))
        if conn.live:   # (always, once it has a remote: a ConnectionUp was returned for it)
            actions.append(ConnectionDown(conn.remote.name, conn.id, reason, link_failed))
        if conn.outbound:
            self.connmaker.failed(conn.address, reason, now)
        self._update_ourself(now, urgent=True)
        self._topology_changed(now)
        return actions

    def shutdown(self) -> list[Output]:
        actions: list[Output] = []
        for conn in list(self.conns.values()):
            if conn.channel is not None:
                actions.append(Send(conn.id, conn.channel.encode(MsgType.CLOSING, b"router shutting down")))
            actions.append(Close(conn.id, "router shutting down"))
            if conn.live and conn.remote is not None:
                actions.append(ConnectionDown(conn.remote.name, conn.id, "router shutting down"))
        self.conns.clear()
        return actions

    # --- report -------------------------------------------------------------------------------
    def report(self, now: float) -> dict:
        reachable = self.routes.reachable()
        peers = []
        for name in sorted(reachable):
            e = self.topology.peers[name]
            peers.append({"name": e.name, "nickname": e.nickname, "uid": e.uid, "version": e.version,
                          "connections": [{"name": c.name, "nickname": self._nick(c.name), "address": c.address,
                                           "outbound": c.outbound, "established": c.established}
                                          for c in e.connections]})
        conns = []
        for c in sorted(self.conns.values(), key=lambda c: c.address):
            state = "established" if c.state == ConnState.ESTABLISHED else "pending"
            info = c.remote and f"{c.remote.name}({c.remote.nickname})" or ""
            conns.append({"address": c.address, "outbound": c.outbound, "state": state, "info": info,
                          "name": c.remote.name if c.remote else None,
                          "nickname": c.remote.nickname if c.remote else None,
                          "encrypted": bool(c.channel and c.channel.encrypted),
                          "rtt_ms": round(c.rtt * 1000, 3) if c.rtt is not None else None})
        for t in sorted(self.connmaker.targets.values(), key=lambda t: t.address):
            if t.state in ("retrying", "failed"):
                retry = max(0.0, t.next_try - now)
                conns.append({"address": t.address, "outbound": True, "state": t.state,
                              "info": f"{t.info}, retry in {retry:.1f}s", "name": None, "nickname": None,
                              "encrypted": False, "rtt_ms": None})
        for _, addr, reason in self._failed_inbound:
            conns.append({"address": addr, "outbound": False, "state": "failed", "info": reason,
                          "name": None, "nickname": None, "encrypted": False, "rtt_ms": None})
        return {
            "name": self.identity.name,
            "nickname": self.identity.nickname,
            "uid": self.identity.uid,
            "encryption": self.config.password_hash is not None,
            "discovery": self.config.discovery,
            "conn_limit": self.config.conn_limit,
            "peers": peers,
            "connections": conns,
            "targets": self.connmaker.explicit(),
            "discovered": sorted(a for a, t in self.connmaker.targets.items() if not t.explicit),
            "routes": self.routes.to_report(),
        }

    def _nick(self, name: str) -> str:
        e = self.topology.peers.get(name)
        return e.nickname if e else ""
