"""Wires the data plane into the router: bridge, TAP, VXLAN, the sleeve engine, the fast-path
checker, and attach/detach/expose. Runs on the asyncio loop except the engine's own threads.

It follows the mesh through its events (ConnectionUp/Down, RoutesChanged, PeersChanged's known peers,
DatapathMessage), handed over by the router's dispatcher; it never reads the mesh's connections."""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..datapath import fastdp, fdbsync, sleeve
from ..datapath import lane as clane
from ..datapath.engine import Engine, PeerLink, View
from ..datapath.macs import MacTable, mac_str
from ..mesh.core import Throttle
from ..mesh.events import ConnectionDown, ConnectionUp
from ..mesh.grid import GRID, due_after, next_step
from ..mesh.routes import RouteTable
from ..net import bridge as br
from ..net import isolation, udpfilter
from ..net.links import keep_iproute, release_iproute
from ..net.tap import Tap

log = logging.getLogger("weavenet.dataplane")

BRIDGE = "weave"
VXLAN = "vxlan-6784"
TAP = "weave-tap"
VXLAN_PORT = 6784
TAP_MTU = 65521           # the largest a TAP takes with its virtio-net header (tun's MAX_MTU minus 14)
MAX_RESTARTS = 3          # a datapath thread that dies more often than this within RESTART_WINDOW
RESTART_WINDOW = 60.0     # seconds ends the router (exit status 70) for its supervisor to restart
EXIT_DATAPATH = 70        # EX_SOFTWARE
# The source filter's drop counter costs an `nft` subprocess to read: it is read only when asked (report,
# metrics), at most this often, in the netlink thread; an answer shows the count of the previous read.
FILTER_REFRESH = 2.0
STALL = GRID + 0.2        # a gap between syncs beyond this (the ticker wakes on every grid step) was our own stall
GRACE_CHECK = 1.0         # grace periods end this late at most (they last GRACE)
# Seconds between reads of the bridge's local MACs (advertised to fast-path peers); only while there is a
# fast-path peer. The dump was ~40 % of an idle router's CPU at 1 s; a MAC not yet advertised is only
# flooded to the fast-path peers meanwhile, never lost.
LOCAL_READ = 3.0
# A peer whose connection ended (its router killed or restarting) keeps its fast-path state (VXLAN FDB
# entries, source-filter membership) this long, or until it leaves the topology: its kernel still
# forwards. A router starting over an earlier run's state keeps that state as long, until its
# connections are back.
GRACE = 60.0


def _v4(ip: str) -> str:
    """An IPv4 peer accepted on a dual-stack socket shows as ::ffff:a.b.c.d: one spelling everywhere."""
    return ip[7:] if ip.startswith("::ffff:") else ip


def remove_links() -> None:
    """`weave reset`: the bridge and the VXLAN device outlive `weave stop` (as weave's do); reset
    removes them. Containers keep their ethwe, cut off, until they are attached again (which
    re-plugs the existing veth into the new bridge)."""
    for name in (VXLAN, BRIDGE):
        br.delete_link(name)
    isolation.remove()
    udpfilter.remove()


@dataclass(frozen=True)
class DatapathSend:
    """A data-plane control message (fast-path status, FDB advert) for a connected peer: the dispatcher
    sends it with ``Mesh.send_datapath``."""
    peer: str
    body: bytes


@dataclass(frozen=True)
class DatapathChanged:
    """The path to a connected peer changed: "fastdp" came up, or fell back to "sleeve" (for health)."""
    peer: str
    datapath: str


@dataclass
class DataplaneConfig:
    port: int = 6783
    mtu: int = 1376
    fastdp: bool = True
    encrypted: bool = False   # a password is set: the fast path (unauthenticated VXLAN) stays off


class Dataplane:
    """pyroute2 cannot run on the asyncio loop's thread: set-up runs in a worker thread (``setup``),
    and FDB changes go to one netlink thread, in order, so the loop never blocks on them."""

    def __init__(self, cfg: DataplaneConfig, ourname: str) -> None:
        self.cfg = cfg
        self.ourname = ourname
        # The kernel VXLAN carries frames unauthenticated (no ESP here): with a password the sleeve,
        # which authenticates every datagram, is the only path. Otherwise encryption could be bypassed.
        self.fastdp = cfg.fastdp and not cfg.encrypted
        self.fastdp_off = "" if self.fastdp else "encryption is on" if cfg.fastdp else "--no-fastdp"
        if cfg.fastdp and cfg.encrypted:
            log.info("fast datapath is off because encryption is on (VXLAN frames cannot be authenticated)")
        self.macs = MacTable(local=ourname)
        self.engine: Engine | None = None
        self._deaths: deque[float] = deque()
        self.failed = ""          # why the data plane gave up (the router exits)
        self._filter_peers: frozenset[str] | None = None
        self._filter_queued = False   # an _apply_filter waits in the netlink thread
        self._filter_dropped: int | None = None
        self._next_filter_read = 0.0
        self.vxlan_mac: str | None = None
        self.bridge_mac: str | None = None
        self.decider = fastdp.FastPathDecider()
        self._hb_sock = None
        self._hb_drops = 0
        self._links: dict[int, PeerLink] = {}     # mesh connection id -> sleeve link
        self._conns: dict[int, ConnectionUp] = {}  # the mesh's connections that are up, by id
        self._routes = RouteTable({ourname: []}, ourname)
        self._direct: frozenset[str] = frozenset()   # peers routed directly (RouteTable.neighbours)
        self._known: frozenset[str] | None = None  # peers in the topology (None: not told yet)
        self._changed = True                       # connections or routes changed since the last sync
        self._urgent = False   # a fast-path peer's "I hear you" or its MACs changed: sync at the next tick, now
        self._next_hb = 0.0
        self._last_sync = 0.0
        self._next_mac_expiry = 0.0
        self._netlink = ThreadPoolExecutor(1, thread_name_prefix="weave-netlink", initializer=keep_iproute)
        self._grace: dict[str, tuple[str | None, float]] = {}   # underlay ip -> (peer or None, until)
        self._link_failed: set[str] = set()   # peers whose connection the kernel timed out since the last sync
        self._inherited: dict[str, set[str]] = {}   # ip -> unicast VXLAN FDB MACs left by an earlier run
        self.remote_macs = fdbsync.RemoteMacs()
        self._advertiser = fdbsync.Advertiser()
        self._local_read: frozenset[str] | None = None   # written by the netlink thread
        self._local_macs: frozenset[str] | None = None
        self._bridge_ids: br.BridgeIds | None = None
        self._bridge_ids_until = 0.0
        self._next_local_read = 0.0
        self._eligible: dict[str, str] = {}
        self._fast: dict[str, int] | None = None   # fast-path-capable peer -> conn id (from _conns)
        self._forbidden: frozenset[str] = frozenset()
        self._throttle = Throttle()

    def setup(self) -> None:
        """Blocking: bridge, VXLAN, TAP, sockets. Idempotent over an earlier run's leftovers."""
        cfg = self.cfg
        br.ensure_bridge(BRIDGE, cfg.mtu)
        # Before the VXLAN device binds its port: no moment where it takes datagrams from anyone.
        # The peers of an earlier run (killed, or restarting) stay in it until our connections are back.
        kept = udpfilter.current_peers()
        udpfilter.ensure([cfg.port, VXLAN_PORT], kept)
        self._filter_peers = frozenset(kept)
        until = time.monotonic() + GRACE
        self._grace = {ip: (None, until) for ip in kept}
        if self.fastdp:
            self.vxlan_mac = br.ensure_vxlan(VXLAN, BRIDGE, VXLAN_PORT, mtu=cfg.mtu)
            self._adopt_vxlan_fdb(kept)
            self._hb_sock = fastdp.open_heartbeat_socket(VXLAN)
        else:
            br.delete_link(VXLAN)
        # The TAP takes any frame the bridge has (its MTU is the largest): the engine answers one bigger
        # than the overlay MTU with ICMP "fragmentation needed" (or cuts it, without DF), as a router does.
        self.tap = Tap.open(TAP, BRIDGE, TAP_MTU, vnet_hdr=True)
        self.bridge_mac = br.link_mac_of(BRIDGE)
        self.engine = Engine(self.ourname, self.tap.fd, cfg.port, self.macs, vnet_hdr=self.tap.vnet_hdr,
                             mtu=cfg.mtu)
        log.info("sleeve: %s", clane.describe(self.engine.lane))

    def _nl(self, fn, *args) -> None:
        """Queue a netlink change; failures are logged, not raised into the tick."""
        def run() -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - a failed FDB change must not stop the router
                log.warning("netlink %s%s failed: %s", fn.__name__, args, e)
        self._netlink.submit(run)

    def uplinks(self) -> list[str]:
        """Bridge ports towards other hosts (the isolation rules trust what arrives on them)."""
        return [TAP, VXLAN] if self.fastdp else [TAP]

    def features(self) -> dict:
        """Advertised in our handshake: peers that also run a fast path can use it with us; peers that can
        seal with AEGIS-256 do so towards us (the encrypted sleeve's faster AEAD; see datapath.sleeve)."""
        feats = {"fastdp": self.vxlan_mac} if self.vxlan_mac else {}
        if sleeve.AEGIS_AVAILABLE:
            feats["sleeve_aead"] = sleeve.AEGIS
        return feats

    def start(self, loop) -> None:
        self.engine.start()

    def stop(self, loop, keep_datapath: bool = False) -> None:
        """keep_datapath (a restart, e.g. an upgrade): the source filter keeps its peers, so the kernel
        goes on forwarding fast-path traffic to and from them until the next router adopts it (GRACE)."""
        if self._hb_sock is not None:
            self._hb_sock.close()
        self.engine.stop()
        self.tap.close()
        if not keep_datapath:
            # Fail closed while no router runs: the VXLAN device stays, but takes nothing from anyone.
            self._nl(udpfilter.set_peers, set())
        self._nl(release_iproute)
        self._netlink.shutdown(wait=True)

    def _adopt_vxlan_fdb(self, kept: set[str]) -> None:
        """Entries towards the filter's peers still carry traffic (the kernel forwards while no router
        runs): keep them for the grace period. The rest (after `weave stop` emptied the filter) go."""
        for mac, dst in br.fdb_entries(VXLAN):
            if dst in kept:
                if mac != fastdp.ZERO_MAC:
                    self._inherited.setdefault(dst, set()).add(mac)
            else:
                br.fdb_delete(VXLAN, mac, dst)

    # --- mesh events (from the dispatcher) ------------------------------------------------------
    def on_connection_up(self, ev: ConnectionUp) -> None:
        self._conns[ev.conn_id] = ev
        self._changed = True

    def on_connection_down(self, ev: ConnectionDown) -> None:
        if self._conns.pop(ev.conn_id, None) is not None:
            self._changed = True
            if ev.link_failed and self.fastdp:
                self._link_failed.add(ev.peer)

    def on_routes(self, routes: RouteTable) -> None:
        self._routes = routes
        self._direct = frozenset(routes.neighbours())
        self._changed = True

    def on_peers(self, known: frozenset[str]) -> None:
        self._known = known

    # --- called by the router's ticker -----------------------------------------------------------
    def wants_tick(self) -> bool:
        """An event changed what `sync` decides (connections, routes, a fast-path peer's status or MACs): tick now.
        O(1): the router asks after every event."""
        return self._changed or self._urgent

    def next_deadline(self) -> float:
        """When `sync` next has work (0.0: at once). Asked by the ticker after each tick."""
        if self._changed or self._urgent:
            return 0.0
        due = self._next_mac_expiry
        if self._grace:
            due = min(due, self._last_sync + GRACE_CHECK)
        if self.fastdp and self.decider.paths:   # O(fast-path peers): asked by the ticker only
            due = min(due, self._next_hb, self._next_local_read if self._fast else due)
            # A path comes up or goes down on what a sync reads (heartbeats, drained on the heartbeats' ticks)
            # or on the peer's status (which wakes the ticker): it needs no ticks of its own, only these.
            for p in self.decider.paths.values():
                if p.proof_at:      # quiet while its router talks: judged once its heartbeat had its grace
                    judge = max(p.proof_at + fastdp.REPLY_GRACE, p.last_rx + fastdp.RX_TIMEOUT) + 0.01
                    if judge > self._last_sync:
                        due = min(due, judge)
                elif p.last_rx and p.asked_at <= p.last_rx and (p.told or p.active):
                    due = min(due, p.last_rx + fastdp.ASK_AFTER + 0.01)   # quiet by then: ask (once)
                if p.hold_until > self._last_sync:   # damped: looked at again when its hold ends
                    due = min(due, p.hold_until + 0.01)
                status_due = p.remote_ok_at + fastdp.STATUS_VALID + 0.01
                if status_due > self._last_sync:   # (a refresh waits for the heartbeats' tick: one wake-up)
                    due = min(due, status_due)
        return due

    def sync(self, now: float) -> list[DatapathSend | DatapathChanged]:
        """Follow the mesh: sleeve links per connection, routes, fast-path candidates and checks.
        Returns data-plane messages to peers (fast-path status, FDB adverts)."""
        self.check_threads(now)
        conns = self._conns
        changed, self._changed = self._changed, False
        self._urgent = False
        if changed:
            self._links = {cid: self._links.get(cid) or self._new_link(c) for cid, c in conns.items()}
        actions: list[DatapathSend | DatapathChanged] = []
        # A stalled router (overloaded host) did not read heartbeats: that silence is ours, not the paths'.
        stalled = now - self._last_sync - STALL if self._last_sync else 0.0
        self._last_sync = now
        if stalled > 0:
            self.decider.shift(stalled)
        if now >= self._next_mac_expiry:  # lookups ignore stale entries; this frees them
            self._next_mac_expiry = due_after(now, 30.0)
            self.macs.expire(now)
        if self.fastdp:
            if changed:
                cands = {}
                for c in conns.values():
                    mac = c.features.get("fastdp")
                    if mac and c.session_keys is None and c.remote_ip:
                        cands[c.peer] = (_v4(c.remote_ip), mac)
                for name, gone in self.decider.set_candidates(cands).items():
                    self._path_gone(name, gone, now)
            self._link_failed.clear()   # (read by _path_gone in this sync only: bounded by the connections)
            if now >= self._next_hb:   # on a grid: the control heartbeats' ticks are among these
                self._next_hb = next_step(now, fastdp.HB_INTERVAL)
                self._send_heartbeats(now)
            self._read_heartbeats()    # before anything is judged
            for name, p in self.decider.paths.items():
                answer, ask = p.answer_due, self.decider.ask_due(name, now)
                if answer:             # through the path first, then our word over TCP (its proof of life)
                    p.answer_due = False
                    self._send_heartbeat(name, p, now)
                told = self.decider.status_due(name, now, force=answer or ask)
                if told is not None:
                    actions.append(DatapathSend(name, fastdp.status_message(told, ask)))
            up, down = self.decider.evaluate(now, self._direct)
            for name in up:
                self._path_up(name)
            for name in down:
                self._path_down(self.decider.paths[name], removed=False,
                                why=self.decider.why_down(name, now, self._direct))
            actions += [DatapathChanged(n, "fastdp") for n in up] + [DatapathChanged(n, "sleeve") for n in down]
            changed |= bool(up or down)
            actions += self._sync_fdb(conns, now, changed)
        # The filter's peer set changes only with the connections or a grace period: no O(N) pass otherwise.
        grace = bool(self._grace)
        self._expire_grace(now)
        if changed or grace:
            self._update_filter({_v4(c.remote_ip) for c in conns.values() if c.remote_ip} | set(self._grace))
        if changed:
            links = {c.peer: self._links[cid] for cid, c in conns.items()}
            self.engine.publish(View(self.ourname, self._routes, links, self.decider.active()))
        return actions

    # --- thread health and the source filter -----------------------------------------------------
    def check_threads(self, now: float) -> None:
        """Called every tick: a dead datapath thread is restarted at once; one that keeps dying
        ends the router with EXIT_DATAPATH (SystemExit leaves asyncio.run), never a half-dead router."""
        eng = self.engine
        if eng is None or self.failed:
            return
        for name, why in eng.dead_threads().items():
            while self._deaths and now - self._deaths[0] > RESTART_WINDOW:
                self._deaths.popleft()
            self._deaths.append(now)
            if len(self._deaths) > MAX_RESTARTS:
                self.failed = f"{name} died {len(self._deaths)} times in {RESTART_WINDOW:.0f}s ({why})"
                log.critical("data plane failed: %s; exiting for the supervisor to restart the router", self.failed)
                raise SystemExit(EXIT_DATAPATH)
            log.error("datapath thread %s died (%s): restarting it", name, why)
            eng.restart(name)

    def health(self, now: float) -> tuple[str, str]:
        """("healthy" | "degraded" | "failed", why) for `weave status`."""
        if self.failed:
            return "failed", self.failed
        eng = self.engine
        if eng is None:
            return "degraded", "not started"
        dead = eng.dead_threads()
        if dead:
            return "degraded", "; ".join(f"{n} dead: {why}" for n, why in sorted(dead.items()))
        stalled = eng.stalled_threads(now)
        if stalled:
            return "degraded", "; ".join(f"{n} stalled {s}s" for n, s in sorted(stalled.items()))
        restarts = sum(eng.restarts.values())
        return "healthy", f"{restarts} thread restart(s)" if restarts else ""

    def drop_counts(self) -> dict[str, int]:
        """reason -> count: the engine's, refused FDB adverts (fdb_*), and what the nft source filter
        dropped (as filtered_source, from the previous ask: see FILTER_REFRESH)."""
        now = time.monotonic()
        if now >= self._next_filter_read and self._filter_peers is not None:
            self._next_filter_read = now + FILTER_REFRESH
            self._nl(self._read_filter)
        drops = dict(self.engine.drops) if self.engine is not None else {}
        drops.update(self.remote_macs.refused)
        if self._hb_sock is not None:
            self._hb_drops += fastdp.queue_drops(self._hb_sock)
        if self._hb_drops:
            drops["fastdp_heartbeat_queue_full"] = self._hb_drops
        if self._filter_dropped:
            drops["filtered_source"] = self._filter_dropped
        return drops

    def _update_filter(self, ips: set[str]) -> None:
        peers = frozenset(ips)
        if self._filter_peers is not None and peers != self._filter_peers:
            self._filter_peers = peers
            # One `nft` run (~4 ms) at a time, with the latest set: the changes of a mesh forming (one per
            # connection) queued behind a busy netlink thread collapse into one run.
            if not self._filter_queued:
                self._filter_queued = True
                self._nl(self._apply_filter)

    def _apply_filter(self) -> None:
        """Netlink thread. The flag is cleared before the set is read: a change made after this line
        queues another run, one made before it is in this one (a frozenset, replaced whole)."""
        self._filter_queued = False
        udpfilter.set_peers(set(self._filter_peers))

    def _read_filter(self) -> None:
        self._filter_dropped = udpfilter.dropped()

    def _new_link(self, c: ConnectionUp) -> PeerLink:
        tx, rx = c.session_keys if c.session_keys is not None else (None, None)
        return PeerLink(c.peer, (c.remote_ip, c.remote_port), tx, rx,
                        aegis=c.features.get("sleeve_aead") == sleeve.AEGIS)

    # --- fast path ---------------------------------------------------------------------------
    def _send_heartbeats(self, now: float) -> None:
        for name, p in self.decider.paths.items():
            self._send_heartbeat(name, p, now)

    def _send_heartbeat(self, name: str, p: fastdp.PathState, now: float) -> None:
        if self._hb_sock is None:
            return
        if not p.hb_installed:
            self._nl(br.fdb_append, VXLAN, p.remote_mac, p.ip)  # static: heartbeats must reach the peer
            p.hb_installed = True
        if not p.hb_frame:   # full size: see heartbeat_frame
            p.hb_frame = fastdp.heartbeat_frame(self.vxlan_mac, p.remote_mac, self.ourname, now, 14 + self.cfg.mtu)
        try:
            self._hb_sock.send(p.hb_frame)
        except OSError as e:
            log.debug("fast-path heartbeat to %s failed: %s", name, e)

    def _read_heartbeats(self) -> None:
        if self._hb_sock is None:
            return
        for name, at in fastdp.drain(self._hb_sock, 4 * len(self.decider.paths) + 64):
            self.decider.heard(name, at)

    def on_heartbeat(self, peer: str) -> None:
        """The peer's control-plane heartbeat arrived: it is alive (its status goes on counting), but it proves
        nothing about its fast-path heartbeats (see control_heard): a quiet path is asked instead."""
        self.decider.control_heard(peer, time.monotonic(), proof=False)

    def on_datapath_message(self, peer: str, body: bytes) -> None:
        now = time.monotonic()
        # Heartbeats that arrived before this message (kernel stamps) are read first: `now` is when we got to
        # the message, maybe seconds after it came if we were starved, and must not count against them.
        self._read_heartbeats()
        if self.decider.control_heard(peer, now):   # proof of life: judged REPLY_GRACE from now (next_deadline)
            self._urgent = True
        try:
            adv = fdbsync.decode(body)
        except fdbsync.AdvertError as e:
            self.remote_macs.refused[e.reason] += 1
            self._log_refused(peer, e.reason, str(e), now)
            return
        if adv is None:
            p = self.decider.paths.get(peer)
            before = p.remote_ok if p is not None else None
            hears, ask = fastdp.parse_status(body)
            self.decider.remote_status(peer, hears, now)
            if ask:
                self.decider.asked(peer, now)
            if p is not None and (p.remote_ok != before or p.answer_due):
                self._urgent = True
        elif not self.fastdp:
            self.remote_macs.refused["fdb_no_fastdp"] += 1
        else:
            why = self.remote_macs.apply(peer, adv, self._forbidden_macs())
            self._urgent |= self.remote_macs.dirty   # their FDB entries go in now, not at the next deadline
            if why:
                self._log_refused(peer, why, f"{len(adv.add)} MACs added, {len(adv.remove)} deleted", now)

    def _log_refused(self, peer: str, reason: str, detail: str, now: float) -> None:
        held = self._throttle.allow(f"{peer}/{reason}", now)
        if held is not None:
            log.warning("FDB advert from %s refused (%s): %s%s", peer, reason, detail,
                        f" ({held} more not logged)" if held else "")

    def _forbidden_macs(self) -> frozenset[str]:
        """MACs no peer may claim: ours (bridge ports, bridge, VXLAN device) and the peers' VXLAN MACs,
        which carry the heartbeats."""
        mine = {m for m in (self.vxlan_mac, self.bridge_mac) if m}
        return (self._local_macs or frozenset()) | mine | {p.remote_mac for p in self.decider.paths.values()}

    def _read_local(self) -> None:
        """(On the netlink thread, which alone touches _bridge_ids: looked up once a minute, not each read.)"""
        now = time.monotonic()
        if self._bridge_ids is None or now >= self._bridge_ids_until:
            self._bridge_ids, self._bridge_ids_until = br.bridge_ids(BRIDGE, self.uplinks()), now + 60.0
        try:
            self._local_read = br.local_macs_of(self._bridge_ids, fdbsync.MAX_PEER_MACS)
        except Exception:
            self._bridge_ids = None   # a link was replaced: looked up again next time
            raise

    def _sync_fdb(self, conns: dict[int, ConnectionUp], now: float, changed: bool = True) -> list[DatapathSend]:
        """Static VXLAN FDB entries: advertise our local MACs to fast-path peers (full list on a new
        connection and as anti-entropy, else changes), and follow what the peers advertise."""
        actions: list[DatapathSend] = []
        if changed or self._fast is None:   # derived from the connections: recomputed when they change
            self._fast = {c.peer: cid for cid, c in conns.items() if c.session_keys is None
                          and c.features.get("fastdp")}
        fast = self._fast
        if fast and now >= self._next_local_read:
            self._next_local_read = now + LOCAL_READ
            self._nl(self._read_local)
        local = self._local_read
        if local is not None:
            self._local_macs = local
            self._advertiser.retain(fast)
            for name, cid in fast.items():
                body = self._advertiser.due(name, cid, local, now)
                if body is not None:   # (the peer is connected: the mesh has a connection to send it on)
                    actions.append(DatapathSend(name, body))
        # Claims of peers neither connected nor in their grace period are forgotten.
        if self.remote_macs.claims:
            keep = {c.peer for c in conns.values()}
            keep |= {name for name, _ in self._grace.values() if name}
            for peer in [p for p in self.remote_macs.claims if p not in keep]:
                self.remote_macs.drop_peer(peer)
        eligible = {n: p.ip for n, p in self.decider.paths.items() if p.active}
        for ip, (name, _) in self._grace.items():
            if name and name not in eligible:
                eligible[name] = ip
        forbidden = self._forbidden_macs()
        if self.remote_macs.dirty or eligible != self._eligible or forbidden != self._forbidden:
            self._eligible, self._forbidden = eligible, forbidden
            replace, delete = self.remote_macs.changes(eligible, forbidden)
            if replace or delete:
                self._nl(br.fdb_apply, VXLAN, replace, delete)
        return actions

    def _expire_grace(self, now: float) -> None:
        """End grace periods: taken over by a path that is up again (its entries stay), or expired /
        the peer left the topology (flushed as a path going down would be)."""
        if not self._grace:
            return
        active = {p.ip: p for p in self.decider.paths.values() if p.active}
        for ip, (name, until) in list(self._grace.items()):
            if ip in active:
                del self._grace[ip]
                stale = self._inherited.pop(ip, set()) - {active[ip].remote_mac}
                stale = {m for m in stale if self.remote_macs.installed.get(m) != ip}
                if stale:   # an earlier run's unicast entries nobody claims now
                    self._nl(br.fdb_apply, VXLAN, [], [(m, ip) for m in sorted(stale)])
            elif now >= until or (name is not None and self._known is not None and name not in self._known):
                del self._grace[ip]
                self._inherited.pop(ip, None)
                if self.fastdp:
                    self._flush_ip(ip)
                    for p in self.decider.paths.values():
                        if p.ip == ip:
                            p.hb_installed = False   # flushed with the rest: heartbeats need it back
                log.info("data-plane state towards %s%s (source filter%s) dropped after its grace period", ip,
                         f" ({name})" if name else "", ", VXLAN FDB" if self.fastdp else "")

    def _path_up(self, name: str) -> None:
        p = self.decider.paths[name]
        self._nl(br.fdb_append, VXLAN, fastdp.ZERO_MAC, p.ip)
        # The bridge learned this peer's MACs on our TAP while it was on the sleeve: forget them so
        # the next frame floods and is learned on the VXLAN port.
        macs = {mac_str(m) for m in self.macs.macs_of(name)}
        if macs:
            self._nl(br.bridge_fdb_flush_port, TAP, macs)
        log.info("fast datapath to %s(%s) up", name, p.ip)

    def _path_gone(self, name: str, p: fastdp.PathState, now: float) -> None:
        """A candidate path ended with its connection (or the peer's address/MAC changed). One that
        carried traffic keeps its kernel state for GRACE (the peer's kernel may still forward: a router
        restarting), unless its heartbeats had stopped or the kernel timed the connection out (a host gone or
        a link cut, which a silent peer's path is kept up through until its connection ends): then it goes
        at once."""
        failed = name in self._link_failed
        if p.active and now - p.last_rx <= fastdp.RX_TIMEOUT and not failed:
            self._grace[p.ip] = (name, now + GRACE)
            log.info("fast datapath to %s(%s): connection ended, keeping its state for %.0fs", name, p.ip, GRACE)
        elif p.ip not in self._grace:   # else the grace period decides
            self._path_down(p, removed=True)

    def _path_down(self, p: fastdp.PathState, removed: bool, why: str = "") -> None:
        if removed:
            self._flush_ip(p.ip)
            p.hb_installed = False
            return
        # Fallen back, still a candidate: its heartbeat entry stays, so our heartbeats go on reaching it
        # (removed and put back by the netlink thread, a busy one would silence them: the peer's path
        # to us would fall back too).
        self._flush_ip(p.ip, keep=frozenset({p.remote_mac}))
        held = p.hold_until - p.fell_at
        log.info("fast datapath to %s lost (%s): falling back to sleeve%s", p.ip, why,
                 f" (fall {p.falls} within a minute: not back for {held:.0f}s)" if held > 0 else "")

    def _flush_ip(self, ip: str, keep: frozenset[str] = frozenset()) -> None:
        self._nl(br.fdb_flush_dst, VXLAN, ip, keep)   # flood, unicast and heartbeat entries, all but `keep`
        self._nl(br.bridge_fdb_flush_port, VXLAN)   # MACs learned behind VXLAN now go through the TAP
        self.remote_macs.forget_ip(ip)

    # --- report --------------------------------------------------------------------------------
    def connection_info(self, peer: str) -> dict:
        active = peer in self.decider.active()
        info = {"datapath": "fastdp" if active else "sleeve", "mtu": self.cfg.mtu}
        pmtu = self.engine.pmtus().get(peer) if self.engine is not None else None
        if pmtu is not None:
            info["pmtu"] = pmtu   # the sleeve's discovered path MTU to the peer (its datagrams' IP size)
        return info

    def fastdp_totals(self) -> dict[str, tuple[int, int]]:
        out = {}
        for direction in ("tx", "rx"):
            try:
                base = f"/sys/class/net/{VXLAN}/statistics/{direction}_"
                with open(base + "packets") as p, open(base + "bytes") as b:
                    out[direction] = (int(p.read()), int(b.read()))
            except OSError:
                pass
        return out

    def _sleeve_report(self) -> dict:
        """Frames the sleeve carried each way, how many of them the C lane did on its own, and why not if not."""
        eng = self.engine
        if eng is None:
            return {}
        frames = {d: sum(n for (_, dd), n in eng.frames.items() if dd == d) for d in ("tx", "rx")}
        return {"lane": eng.lane, "lane_off": None if eng.lane else clane.describe(False), "frames": frames,
                "lane_frames": dict(zip(("tx", "rx"), eng.lane_fast(), strict=True))}

    def report(self, now: float) -> dict:
        paths = {n: {"ip": p.ip, "active": p.active,
                     "heard_s_ago": round(now - p.last_rx, 2) if p.last_rx else None,
                     "confirmed_s_ago": round(now - p.remote_ok_at, 2) if p.remote_ok_at else None}
                 for n, p in self.decider.paths.items()}
        state, why = self.health(now)
        eng = self.engine
        drops = self.drop_counts()
        dead = eng.dead_threads() if eng is not None else {}
        return {"bridge": BRIDGE, "mtu": self.cfg.mtu, "fastdp": self.fastdp, "fastdp_off": self.fastdp_off,
                "sleeve": self._sleeve_report(),
                "fastdp_paths": paths, "health": state, "health_reason": why,
                "threads": {n: "dead" if n in dead else "alive" for n in (eng.beats if eng is not None else {})},
                "drops": drops, "mac_table": {"entries": len(self.macs), "cap": self.macs.cap,
                                              "evictions": self.macs.evictions, "refused": self.macs.refused},
                "macs": self.macs.snapshot(now)}
