"""The sleeve engine: two threads moving frames between the TAP device and the UDP socket.

Per-frame work never runs on the asyncio loop. The control plane publishes an immutable ``View``
(routes, links, fast-path peers) and swaps it atomically; the threads only read it.

Everything a datagram or frame can do wrong ends as a counted drop (``drops[reason]``); an unexpected
exception is counted as "internal" and logged at most once per LOG_EVERY seconds, and the loop goes
on. A thread that ends anyway is visible in ``dead_threads()`` for the control plane to act on.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from ..mesh.routes import RouteTable
from . import icmp, mmsg, pmtu, sleeve
from . import lane as clane
from .forward import Forwarder, Out
from .macs import MacTable
from .pmtu import FLOOR, UDP_IP_OVERHEAD, Prober, route_mtu
from .reassembly import Reassembler
from .replay import ReplayWindow

log = logging.getLogger("weavenet.datapath")

VNET_HDR = 10
BATCH_BYTES = 60000      # frames queued together share one datagram up to this size
BATCH_FRAMES = 64
SOCK_BUF = 8 * 1024 * 1024
LOG_EVERY = 10.0         # at most one log line per kind of trouble per this many seconds
STALL_AFTER = 10.0       # a loop that has not come round for this long is reported as stalled
LOOPS = {"weave-tap-rx": "_tap_loop", "weave-udp-rx": "_udp_loop"}
# <linux/in.h>, not exported by Python's socket module. PROBE: DF set, the kernel's PMTU cache (which any
# ICMP can lower) ignored; each connection's prober decides the size (see pmtu).
IP_MTU_DISCOVER, IP_PMTUDISC_PROBE = 10, 3
# The receive thread runs the probers when the earliest one is due (Prober.due), not on a fixed tick, so an
# idle router with many peers sleeps; it still comes round every IDLE_WAKE seconds (its heartbeat for
# stalled_threads) and at once when woken (new links published, a send failed with EMSGSIZE).
IDLE_WAKE = 2.0
PROBE_MIN_GAP = 0.01     # a prober just run is not run again sooner (its deadline passed without work: no spin)
SEND_TIMEOUT = 0.1       # a send into a full socket buffer gives up (counted) rather than stall its thread
UDP_IP = UDP_IP_OVERHEAD
# UDP GSO (<linux/udp.h>): one sendmsg carries up to GSO_SEGMENTS fragments (the older kernels' limit).
SOL_UDP, UDP_SEGMENT, GSO_SEGMENTS = 17, 103, 64
GSO_SIZE = struct.Struct("=H")
GSO_UNSUPPORTED = {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
VIRTIO_NEEDS_CSUM = 1    # virtio_net_hdr.flags: the transport checksum is left to be completed


@dataclass(eq=False)
class PeerLink:
    """The sleeve to one directly connected peer, for the lifetime of one connection."""

    name: str
    addr: tuple[str, int]
    tx_key: bytes | None
    rx_key: bytes | None
    name_b: bytes = b""
    seq: itertools.count = field(default_factory=itertools.count)
    replay: ReplayWindow = field(default_factory=ReplayWindow)
    ceiling: int = 0            # the route's MTU towards the peer (0: ask the kernel)
    # The receive thread owns the prober and the reassembly; the sending thread reads pmtu (an int,
    # replaced atomically) and only raises too_big (a send failed with EMSGSIZE) for the owner to act on.
    pmtu: int = FLOOR
    too_big: bool = False
    prober: Prober | None = None
    reasm: Reassembler = field(default_factory=Reassembler)
    # Both ends seal with AEGIS-256 (each advertised sleeve_aead "aegis256"); the keys are then derived
    # ones (sleeve.aegis_key) and a datagram sealed the other way is refused ("auth").
    aegis: bool = False
    probe_gen: int = 0          # the receive thread's probe schedule: only its newest entry for this link counts
    tx_seen: int = -1           # frames sent to it when its prober last ran (the receive thread's)
    # The C lane's half of this link (lane.py): its sequence numbers, replay window, reassembly and counters
    # when the engine runs the lane. None where the lane is not built.
    c: object = None

    def __post_init__(self) -> None:
        self.name_b = sleeve.name_bytes(self.name)
        self.aegis = self.aegis and sleeve.AEGIS_AVAILABLE and self.tx_key is not None and self.rx_key is not None
        if self.aegis:
            self.tx_key, self.rx_key = sleeve.aegis_key(self.tx_key), sleeve.aegis_key(self.rx_key)
        ip = self.addr[0]
        if ip.startswith("::ffff:"):  # an IPv4 peer accepted on a dual-stack socket
            self.addr = (ip[7:], self.addr[1])
        if not self.ceiling:
            self.ceiling = route_mtu(self.addr[0], self.addr[1])
        self.prober = Prober(self.ceiling, time.monotonic())
        self.pmtu = self.prober.pmtu
        self.c = clane.new_link(self.name_b, self.addr, self.tx_key, self.rx_key, self.aegis, self.pmtu)

    def set_pmtu(self, pmtu: int) -> None:
        self.pmtu = pmtu
        if self.c is not None:
            self.c.pmtu = pmtu

    def counters(self) -> dict[str, int]:
        """What the lane carried for this link (frames and bytes each way, reassemblies evicted)."""
        return self.c.counters() if self.c is not None else {}

    @property
    def ip(self) -> str:
        return self.addr[0]


@dataclass
class Stats:
    """One thread's counters: each thread writes only its own (no lock on the hot path, no lost
    increments); readers sum them."""

    frames: Counter = field(default_factory=Counter)   # (peer, direction) -> frames
    bytes: Counter = field(default_factory=Counter)
    drops: Counter = field(default_factory=Counter)    # reason -> count


@dataclass(frozen=True)
class View:
    ourself: str
    routes: RouteTable
    links: dict[str, PeerLink]
    fastdp: frozenset[str] = frozenset()

    def link_by_bytes(self) -> dict[bytes, PeerLink]:
        return {lk.name_b: lk for lk in self.links.values()}


class Engine:
    def __init__(self, ourself: str, tap_fd: int, port: int, macs: MacTable, vnet_hdr: bool = True,
                 bind: str = "0.0.0.0", mtu: int = 0, lane: bool | None = None) -> None:
        self.ourself = ourself
        self.mtu = mtu            # the overlay MTU: a bigger frame from the bridge gets ICMP or is cut (0: no limit)
        self.max_frame = (self.off_for(vnet_hdr) + icmp.ETH + mtu) if mtu else 1 << 30
        self.our_b = sleeve.name_bytes(ourself)
        self.tap_fd = tap_fd
        self.off = VNET_HDR if vnet_hdr else 0
        self.macs = macs
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
        # Never IP fragmentation on the underlay (fragments are dropped by many networks): DF on every
        # datagram, which the sleeve cuts to each connection's discovered path MTU.
        self.sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        self.sock.bind((bind, port))
        self.port: int = self.sock.getsockname()[1]  # port 0 (tests): the one the kernel chose
        # Non-blocking: a send tries at once and waits (SEND_TIMEOUT) only if the buffer is full. A socket
        # timeout would have Python poll before every send, a system call per datagram for nothing.
        self.sock.setblocking(False)
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)   # pokes the receive thread
        self._halt = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)   # readable once stopping: ends the TAP poll
        # The C lane (lane.py) where it is built: the engine's cached decisions and every datagram's work
        # without the GIL. lane=False (or WEAVENET_SLEEVE_LANE=off): all in Python.
        self._lane = None
        if clane.wanted(lane):
            with contextlib.suppress(OSError):
                self.sock.setsockopt(mmsg.SOL_UDP, mmsg.UDP_GRO, 1)
            self._lane = clane.new_lane(tap_fd, self.sock.fileno(), self._halt, self._wake, self.off, self.our_b,
                                        self.max_frame)
        self._by_c: dict[object, PeerLink] = {}
        self._probe_at = 0.0      # when the receive thread next runs the probers (0: at once)
        # The probers' schedule, owned by the receive thread: (due, tie, gen, link), so a wake-up touches only
        # the probers that are due, not every link (that was O(N) per wake, and wakes grow with N: O(N^2)).
        # A poke (new links published, EMSGSIZE) has it rebuilt from the published links.
        self._probe_heap: list[tuple[float, int, int, PeerLink]] = []
        self._probe_rescan = True
        self._probe_tie = itertools.count()
        self.gso = True           # until the kernel refuses UDP GSO once
        self._view = View(ourself, RouteTable({ourself: []}, ourself), {})
        self._by_bytes: dict[bytes, PeerLink] = {}
        self._fwd = Forwarder(ourself, self._view.routes, frozenset(), macs)
        self._stats = {name: Stats() for name in LOOPS}   # per thread (a restarted one goes on counting)
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self.deaths: dict[str, str] = {}      # thread name -> why it ended (until restarted)
        self.restarts = Counter()             # thread name -> restarts
        self.beats: dict[str, float] = {}     # thread name -> when its loop last came round
        self._logged: dict[str, float] = {}   # kind of trouble -> when last logged
        self._suppressed = Counter()

    @staticmethod
    def off_for(vnet_hdr: bool) -> int:
        return VNET_HDR if vnet_hdr else 0

    # --- control plane side ---------------------------------------------------------------------
    @property
    def lane(self) -> bool:
        return self._lane is not None

    def lane_fast(self) -> tuple[int, int]:
        """(frames sent, frames delivered) by the lane alone, without Python (0, 0 without the lane)."""
        return self._lane.fast if self._lane is not None else (0, 0)

    def pmtus(self) -> dict[str, int]:
        """peer -> the path MTU its sleeve datagrams are cut to now."""
        return {name: lk.pmtu for name, lk in self._view.links.items()}

    def _sum(self, attr: str) -> Counter:
        total: Counter = Counter()
        for st in self._stats.values():
            total.update(dict(getattr(st, attr)))   # dict() copies in one step under the GIL
        return total

    def _with_lane(self, total: Counter, what: str) -> Counter:
        """Add what the lane counted per link (tx_frames, rx_bytes...) under the threads' keys."""
        for name, lk in self._view.links.items():
            c = lk.counters()
            for direction in ("tx", "rx"):
                if c.get(f"{direction}_{what}"):
                    total[(name, direction)] += c[f"{direction}_{what}"]
        return total

    @property
    def frames(self) -> Counter:
        return self._with_lane(self._sum("frames"), "frames")

    @property
    def bytes(self) -> Counter:
        return self._with_lane(self._sum("bytes"), "bytes")

    @property
    def drops(self) -> Counter:
        total = self._sum("drops")
        if self._lane is not None:
            total.update(self._lane.drops())
        # Fragmented datagrams given up unfinished (timed out, or evicted by newer ones): their fragments lost.
        incomplete = sum(lk.reasm.evicted + lk.counters().get("evicted", 0) for lk in self._view.links.values())
        if incomplete:
            total["frag_incomplete"] += incomplete
        return total

    def publish(self, view: View) -> None:
        """Swap in new routes/links; each attribute assignment is atomic for the threads."""
        self._by_bytes = view.link_by_bytes()
        self._fwd = Forwarder(view.ourself, view.routes, view.fastdp, self.macs)
        self._view = view
        self._by_c = {lk.c: lk for lk in view.links.values() if lk.c is not None}
        if self._lane is not None:
            self._lane.set_links(list(self._by_c))   # voids every decision cached in the lane
        self.poke_prober()        # new links probe at once

    def poke_prober(self) -> None:
        """Have the receive thread look at every link's prober now (any thread may call this)."""
        self._probe_rescan = True
        self._probe_at = 0.0
        with contextlib.suppress(OSError):   # closed (stopping) or the counter full: awake anyway
            os.eventfd_write(self._wake, 1)

    def start(self) -> None:
        for name in LOOPS:
            self._spawn(name)

    def stop(self) -> None:
        # Both threads woken, not waited for (IDLE_WAKE, the TAP poll): a restart's sleeve gap included it.
        self._stop.set()
        self.poke_prober()
        os.eventfd_write(self._halt, 1)
        for t in self._threads.values():
            t.join(timeout=2)
        self.sock.close()
        os.close(self._wake)
        os.close(self._halt)

    # --- thread health ---------------------------------------------------------------------------
    def _spawn(self, name: str) -> None:
        self.beats[name] = time.monotonic()
        t = threading.Thread(target=self._run, args=(name,), name=name, daemon=True)
        self._threads[name] = t
        t.start()

    def _run(self, name: str) -> None:
        try:
            getattr(self, LOOPS[name])()
            if not self._stop.is_set():
                self.deaths[name] = "loop ended (device closed?)"
        except BaseException as e:  # noqa: BLE001 - recorded for the control plane, which acts on it
            self.deaths[name] = f"{type(e).__name__}: {e}"
            log.exception("datapath thread %s died", name)

    def dead_threads(self) -> dict[str, str]:
        """Threads that ended while the engine should be running: name -> why."""
        if self._stop.is_set():
            return {}
        return {n: self.deaths.get(n, "ended") for n, t in self._threads.items() if not t.is_alive()}

    def stalled_threads(self, now: float) -> dict[str, float]:
        """Live threads whose loop has not come round for STALL_AFTER seconds: name -> seconds."""
        return {n: round(now - self.beats.get(n, now), 1) for n, t in self._threads.items()
                if t.is_alive() and now - self.beats.get(n, now) > STALL_AFTER}

    def restart(self, name: str) -> None:
        self.restarts[name] += 1
        self.deaths.pop(name, None)
        self._spawn(name)

    def _trouble(self, kind: str, exc: BaseException, st: Stats) -> None:
        """Count an unexpected per-packet exception and log it, rate-limited (never once per packet)."""
        st.drops[kind] += 1
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY) >= LOG_EVERY:
            n, self._suppressed[kind] = self._suppressed[kind], 0
            self._logged[kind] = now
            log.warning("datapath %s: %s: %s%s", kind, type(exc).__name__, exc,
                        f" (and {n} more since the last report)" if n else "", exc_info=exc)
        else:
            self._suppressed[kind] += 1

    # --- TAP -> peers ----------------------------------------------------------------------------
    def _tap_loop(self) -> None:
        os.set_blocking(self.tap_fd, False)
        if self._lane is not None:
            return self._tap_lane_loop()
        poller = select.poll()
        poller.register(self.tap_fd, select.POLLIN)
        poller.register(self._halt, select.POLLIN)
        beats = self.beats
        st = self._stats["weave-tap-rx"]
        while not self._stop.is_set():
            beats["weave-tap-rx"] = time.monotonic()
            if not poller.poll(500) or self._stop.is_set():
                continue
            try:
                if not self._tap_batch(st):
                    return
            except Exception as e:  # noqa: BLE001 - a bug must cost one batch, not the thread
                self._trouble("internal", e, st)

    def _tap_lane_loop(self) -> None:
        """The lane reads the TAP and sends what the engine's cached decisions cover; the rest comes back
        here (first frames of a pair, broadcasts, frames above the MTU) and goes the Python way."""
        lane, beats = self._lane, self.beats
        st = self._stats["weave-tap-rx"]
        while not self._stop.is_set():
            beats["weave-tap-rx"] = time.monotonic()
            try:
                frames = lane.tx_pump(500)
            except OSError as e:
                if e.errno == errno.EBADF or self._stop.is_set():
                    return
                self._trouble("tap_read", e, st)
                time.sleep(0.01)  # a device in error polls readable at once: do not spin on it
                continue
            if frames is None:    # EOF: the TAP (or the test's socket) is closed
                return
            if frames:
                try:
                    self._from_tap(frames, st)
                except Exception as e:  # noqa: BLE001 - a bug must cost one batch, not the thread
                    self._trouble("internal", e, st)

    def _tap_batch(self, st: Stats) -> bool:
        """Read up to BATCH_FRAMES frames from the TAP and send them on; False once the TAP is gone."""
        frames: list[bytes] = []
        gone = False
        for _ in range(BATCH_FRAMES):
            try:
                frame = os.read(self.tap_fd, 65600)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EBADF or self._stop.is_set():
                    return False
                self._trouble("tap_read", e, st)
                time.sleep(0.01)  # a device in error polls readable at once: do not spin on it
                break
            if len(frame) < self.off + 14:
                if not frame:  # EOF: the TAP (or the test's socket) is closed
                    gone = True
                    break
                st.drops["runt"] += 1
                continue
            frames.append(frame)
        self._from_tap(frames, st)
        return not gone

    def _from_tap(self, frames: list[bytes], st: Stats) -> None:
        """Frames from our bridge: learn their sources, decide where each goes, send them grouped per output
        (one datagram per output up to BATCH_BYTES). With the lane, unicast decisions are cached in it."""
        off = self.off
        groups: dict[Out, list[bytes]] = {}
        sizes: dict[Out, int] = {}
        now = time.monotonic()
        fwd = self._fwd
        learn, ourself = self.macs.learn, self.ourself
        max_frame = self.max_frame
        lane = self._lane
        todo = frames[::-1]           # a stack: IP fragments the router cuts from a DF-less packet go on top
        while todo:
            frame = todo.pop()
            if len(frame) > max_frame and self._oversize(frame, todo, st):
                continue
            # Our bridge's MACs are ours: a sleeve frame may not move them to a remote peer.
            src, dst = frame[off + 6:off + 12], frame[off:off + 6]
            if learn(src, ourself, now) and lane is not None:
                lane.flush()          # a MAC new or moved here: no cached delivery to a remote may stand
            outs = fwd.from_local(dst, now)
            if isinstance(outs, str):
                st.drops[outs] += 1
                continue
            if lane is not None and len(outs) == 1:
                self._cache_tx(src, dst, outs[0])
            for out in outs:
                n = len(frame) + 4
                if sizes.get(out, 0) + n > BATCH_BYTES and out in groups:
                    self._send(out, groups.pop(out), self.our_b, st)
                    sizes[out] = 0
                groups.setdefault(out, []).append(frame)
                sizes[out] = sizes.get(out, 0) + n
        for out, group in groups.items():
            self._send(out, group, self.our_b, st)

    def _cache_tx(self, src: bytes, dst: bytes, out: Out) -> None:
        """A unicast decision the lane may repeat for this MAC pair for a while (lane.CACHE_TTL)."""
        if out.dest is None or out.relay_only:
            return
        link = self._view.links.get(out.hop)
        if link is not None and link.c is not None:
            self._lane.cache_tx(src, dst, link.c, sleeve.name_bytes(out.dest))

    def _oversize(self, frame: bytes, pending: list[bytes], st: Stats) -> bool:
        """A frame bigger than the overlay MTU (a container with a bigger MTU than the overlay's, or
        TSO segments cut for one): what a kernel router does. True if the frame itself is not to be sent."""
        off, mtu = self.off, self.mtu
        gso = off and frame[1]
        if gso:  # a TSO super-frame is fine as long as the segments the receiver cuts fit the MTU
            # (its headers read through a view: the common case must not copy 64 KiB)
            seg = icmp.gso_segment(memoryview(frame)[off:], int.from_bytes(frame[4:6], "little"))
            if seg is not None and seg <= mtu:
                return False
        eth = frame[off:]
        df = icmp.dont_fragment(eth)
        if df is False and not gso:
            if off and frame[0] & VIRTIO_NEEDS_CSUM:   # complete the checksum the kernel left to us
                eth = icmp.complete_checksum(eth, int.from_bytes(frame[6:8], "little") - off,
                                             int.from_bytes(frame[8:10], "little"))
            frags = icmp.fragment(eth, mtu) if eth is not None else None
            if frags:
                st.drops["fragmented"] += 1        # not a loss: counted to show it happens
                pending.extend(bytes(off) + f for f in reversed(frags))
                return True
        reply = icmp.frag_needed(eth, mtu) if df else None
        if reply is None:
            st.drops["too_big"] += 1
            return True
        st.drops["frag_needed"] += 1
        try:
            os.write(self.tap_fd, bytes(off) + reply)
        except OSError:
            st.drops["tap_write"] += 1
        return True

    def _send(self, out: Out, frames: list[bytes], origin_b: bytes, st: Stats) -> None:
        link = self._view.links.get(out.hop)
        if link is None:
            st.drops["no_route"] += len(frames)
            return
        dest_b = sleeve.name_bytes(out.dest) if out.dest else sleeve.BROADCAST
        if self._lane is not None and link.c is not None:   # built, sealed, cut and counted there
            self._lane.send(link.c, origin_b, dest_b, frames, out.relay_only)
            return
        dg = sleeve.encode(self.our_b, next(link.seq), origin_b, dest_b, frames, link.tx_key, out.relay_only,
                           link.aegis)
        if len(dg) > sleeve.MAX_DATAGRAM:
            if len(frames) > 1:  # split the batch; a single frame this big cannot be carried
                half = len(frames) // 2
                self._send(out, frames[:half], origin_b, st)
                self._send(out, frames[half:], origin_b, st)
            else:
                st.drops["too_big"] += 1
            return
        limit = link.pmtu - UDP_IP
        try:
            if len(dg) <= limit:
                self._sendto(dg, link.addr)
            else:
                self._send_fragments(dg, limit, link.addr, st)
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                link.too_big = True   # the route's MTU shrank below our path MTU: the prober re-checks
                self.poke_prober()
            st.drops["send_error"] += len(frames)
            log.debug("sleeve send to %s failed: %s", link.name, e)
            return
        st.frames[(out.hop, "tx")] += len(frames)
        st.bytes[(out.hop, "tx")] += len(dg)

    def _send_fragments(self, dg: bytes, size: int, addr: tuple[str, int], st: Stats) -> None:
        """A datagram above the path MTU goes out as fragments of `size` bytes (the last shorter), in as
        few system calls as UDP GSO allows: the kernel gathers the pieces (sleeve.fragment_pieces: each
        fragment's header and a slice of the datagram, nothing copied here) and cuts the buffer into
        datagrams of `size` bytes, each a datagram of its own with DF."""
        pieces, count = sleeve.fragment_pieces(dg, size)
        per_call = min(GSO_SEGMENTS, sleeve.MAX_DATAGRAM // size) if self.gso else 1
        i = 0
        while i < count:
            n = min(per_call, count - i)
            part = pieces[3 * i:3 * (i + n)]
            if n == 1:
                self._sendto(b"".join(part), addr)
            else:
                try:
                    self._sendmsg(part, [(SOL_UDP, UDP_SEGMENT, GSO_SIZE.pack(size))], addr)
                except OSError as e:
                    if e.errno not in GSO_UNSUPPORTED:
                        raise
                    self.gso = False       # e.g. no checksum offload on the way out: one datagram per call
                    self._trouble("gso_off", e, st)
                    per_call = 1
                    continue               # the same fragments again, one by one
            i += n

    def _sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            self._wait_writable()
            self.sock.sendto(data, addr)

    def _sendmsg(self, pieces: list, ancillary: list, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendmsg(pieces, ancillary, 0, addr)
        except BlockingIOError:
            self._wait_writable()
            self.sock.sendmsg(pieces, ancillary, 0, addr)

    def _wait_writable(self) -> None:
        """The socket buffer is full: wait for room up to SEND_TIMEOUT, then give up (the caller counts it)."""
        if not select.select((), (self.sock,), (), SEND_TIMEOUT)[1]:
            raise TimeoutError("sleeve socket buffer full")

    # --- peers -> TAP / relay --------------------------------------------------------------------
    def _udp_loop(self) -> None:
        if self._lane is not None:
            return self._udp_lane_loop()
        sock = self.sock
        off = self.off
        beats = self.beats
        st = self._stats["weave-udp-rx"]
        # Batches of datagrams per system call where libc has recvmmsg; one recvfrom each otherwise.
        rx = mmsg.Receiver(sock) if mmsg.Receiver.available else None
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        receive = self._receive
        Run = sleeve.Run
        while not self._stop.is_set():
            now = beats["weave-udp-rx"] = time.monotonic()
            self._run_probers(now, st)
            try:
                batch = rx.recv() if rx is not None else None
                if not batch:
                    wait = min(IDLE_WAKE, max(0.0, self._probe_at - now))
                    ready = poller.poll(wait * 1000)
                    if any(fd == self._wake for fd, _ in ready):
                        os.eventfd_read(self._wake)
                    if rx is not None or not any(fd == sock.fileno() for fd, _ in ready):
                        continue
                    dg, src = sock.recvfrom(65535)
                    batch = [(dg, src[0], 0)]
            except (TimeoutError, BlockingIOError):
                continue
            except OSError as e:
                if self._stop.is_set() or e.errno == errno.EBADF:
                    return
                continue  # e.g. ECONNREFUSED left by an ICMP error for an earlier send
            for data, src_ip, seg in batch:
                # A GRO train: whole fragmented datagrams in it come out put together, runs of fragments of
                # one as one Run (sleeve.split_train).
                for dg in sleeve.split_train(data, seg) if seg else (data,):
                    try:
                        if type(dg) is Run:
                            receive(dg.fragment, src_ip, off, now, st, dg.frags)
                        else:
                            receive(dg, src_ip, off, now, st)
                    except sleeve.SleeveError as e:
                        st.drops[e.reason] += 1
                    except Exception as e:  # noqa: BLE001 - a bug must cost one datagram, not the thread
                        self._trouble("internal", e, st)

    def _run_probers(self, now: float, st: Stats) -> None:
        """The receive thread's turn at the path-MTU probers, when one is due or the links changed."""
        if now >= self._probe_at or self._probe_rescan:
            try:
                self._probe_at = self._probe_tick(now, st)
            except Exception as e:  # noqa: BLE001 - as for a datagram: counted, logged, the loop goes on
                self._probe_at = now + 1.0
                self._trouble("internal", e, st)

    def _udp_lane_loop(self) -> None:
        """The lane receives, checks, opens and delivers what the engine's cached decisions cover; here come
        path-MTU probes, datagrams of senders it does not know, and opened bodies the engine decides on."""
        lane, off, beats = self._lane, self.off, self.beats
        st = self._stats["weave-udp-rx"]
        while not self._stop.is_set():
            now = beats["weave-udp-rx"] = time.monotonic()
            self._run_probers(now, st)
            try:
                items = lane.rx_pump(int(min(IDLE_WAKE, max(0.0, self._probe_at - now)) * 1000))
            except OSError as e:
                if self._stop.is_set() or e.errno == errno.EBADF:
                    return
                continue
            for item in items:
                try:
                    if type(item[0]) is bytes:            # (datagram, source ip): a probe, or an unknown sender
                        self._receive(item[0], item[1], off, now, st, lane=True)
                    else:                                 # (link, opened body)
                        link = self._by_c.get(item[0])
                        if link is None:
                            st.drops["unknown_peer"] += 1
                            continue
                        origin_b, dest_b, relay_only, frames = sleeve.parse_body(item[1])
                        self._deliver(link, origin_b, dest_b, relay_only, frames, now, st)
                except sleeve.SleeveError as e:
                    st.drops[e.reason] += 1
                except Exception as e:  # noqa: BLE001 - a bug must cost one datagram, not the thread
                    self._trouble("internal", e, st)

    def _probe_tick(self, now: float, st: Stats) -> float:
        """Run the path-MTU probers that are due (this thread owns them) and send their probes; returns when
        the next one is due. After a poke, every published link's prober is looked at once."""
        heap = self._probe_heap
        links = self._view.links
        if self._probe_rescan:
            self._probe_rescan = False
            heap.clear()
            for link in links.values():
                self._probe_schedule(link, now)
        while heap and heap[0][0] <= now:
            _, _, gen, link = heapq.heappop(heap)
            if gen != link.probe_gen or links.get(link.name) is not link:
                continue                  # re-scheduled since, or the connection is gone
            prober = link.prober
            if link.c is not None and link.c.take_too_big():
                link.too_big = True
            if prober.resting and not link.too_big and not self._sent_since_probe(link):
                # Nothing sent on it since (idle, or carried by the fast path): confirming a size nobody uses
                # costs datagrams on every link for nothing; traffic that resumes is seen here within a period.
                self._probe_schedule(link, now + pmtu.CONFIRM_EVERY)
                continue
            if link.too_big:
                link.too_big = False
                link.ceiling = route_mtu(link.addr[0], link.addr[1])
                prober.on_ceiling(link.ceiling, now)
            for nonce, size in prober.tick(now):
                try:
                    self._sendto(sleeve.probe(self.our_b, nonce, size - UDP_IP), link.addr)
                except OSError:
                    st.drops["probe_send_error"] += 1
            link.set_pmtu(prober.pmtu)
            self._probe_schedule(link, now + PROBE_MIN_GAP)
        return min(heap[0][0], now + IDLE_WAKE) if heap else now + IDLE_WAKE

    def _sent_since_probe(self, link: PeerLink) -> bool:
        sent = sum(st.frames.get((link.name, "tx"), 0) for st in self._stats.values())  # (other threads' too)
        sent += link.counters().get("tx_frames", 0)
        fresh, link.tx_seen = sent != link.tx_seen, sent
        return fresh

    def _probe_schedule(self, link: PeerLink, earliest: float) -> None:
        """(Re)place the link's entry in the schedule at its prober's deadline, not before `earliest`."""
        link.probe_gen += 1
        heapq.heappush(self._probe_heap, (max(link.prober.due(), earliest), next(self._probe_tie), link.probe_gen,
                                          link))

    def _probe(self, dg: bytes, seq: int, link: PeerLink, now: float, st: Stats) -> None:
        """A path-MTU probe (echo its size) or the echo of one of ours (to its prober)."""
        hs = sleeve.HEADER.size
        kind = dg[hs]
        if kind == sleeve.PROBE:
            try:
                self._sendto(sleeve.echo(self.our_b, seq, len(dg) + UDP_IP), link.addr)
            except OSError:
                st.drops["probe_send_error"] += 1
        elif kind == sleeve.ECHO and len(dg) == hs + sleeve.ECHO_BODY.size:
            _, size = sleeve.ECHO_BODY.unpack_from(dg, hs)
            if link.prober.on_reply(seq.to_bytes(8, "big"), size, now):
                link.set_pmtu(link.prober.pmtu)
                self._probe_schedule(link, now)     # a round may have ended: the next one starts now
                self._probe_at = min(self._probe_at, self._probe_heap[0][0])
            else:
                st.drops["probe_unmatched"] += 1
        else:
            st.drops["malformed"] += 1

    def _receive(self, dg: bytes, src_ip: str, off: int, now: float, st: Stats, frags: int = 1,
                 lane: bool = False) -> None:
        """One datagram from the network (frags > 1: a sleeve.Run of fragments cut from a GRO train). lane:
        one the lane handed back: a probe, or a sender it did not know a moment ago (a link it cannot carry
        goes on here; one it can is not taken: the lane owns its replay window)."""
        sender, seq, flags = sleeve.peek(dg)
        link = self._by_bytes.get(sender)
        if link is None:
            st.drops["unknown_peer"] += 1
            return
        if src_ip != link.addr[0]:  # only the peer's underlay address may speak for it
            st.drops["wrong_source"] += 1
            return
        if flags & ~sleeve.KNOWN_FLAGS:
            st.drops["malformed"] += 1
            return
        if flags & sleeve.F_PROBE:
            self._probe(dg, seq, link, now, st)
            return
        if lane and link.c is not None:   # the lane's link (its replay window) but not in its set a moment ago
            st.drops["unknown_peer"] += 1
            return
        key = link.rx_key
        if bool(flags & sleeve.F_ENCRYPTED) != (key is not None) or bool(flags & sleeve.F_AEGIS) != link.aegis:
            st.drops["auth"] += 1
            return
        if key is not None and not link.replay.check(seq):
            st.drops["replay"] += 1
            return
        if flags & sleeve.F_FRAG:
            whole = link.reasm.add(dg, seq, now, frags)
            if whole is None:
                return
            dg = whole
        origin_b, dest_b, relay_only, frames = sleeve.decode_body(dg, seq, key)
        if key is not None:
            link.replay.accept(seq)
        st.frames[(link.name, "rx")] += len(frames)
        st.bytes[(link.name, "rx")] += len(dg)
        self._deliver(link, origin_b, dest_b, relay_only, frames, now, st)

    def _deliver(self, link: PeerLink, origin_b: bytes, dest_b: bytes, relay_only: bool, frames: list,
                 now: float, st: Stats) -> None:
        """An authenticated datagram's frames: into our bridge, on to other peers, or dropped (counted). With
        the lane, a delivery it may repeat for a while is cached in it (frames the hop sends us itself)."""
        off = self.off
        origin = sleeve.name_str(origin_b)
        dest = None if dest_b == sleeve.BROADCAST else sleeve.name_str(dest_b)
        decision = self._fwd.from_sleeve(origin, dest, relay_only)
        if isinstance(decision, str):
            st.drops[decision] += len(frames)
            return
        inject, outs = decision
        learn, lane = self.macs.learn, self._lane
        cache = (lane is not None and link.c is not None and inject and origin == link.name and dest == self.ourself
                 and not relay_only)
        good = []
        for f in frames:
            if len(f) < off + 14:
                st.drops["runt"] += 1
                continue
            if f[off + 6] & 1:  # multicast/broadcast source MAC: no valid frame has one
                st.drops["bad_src_mac"] += 1
                continue
            src = bytes(f[off + 6:off + 12])
            learned = learn(src, origin, now)
            if learned is None:
                st.drops["mac_hijack"] += 1  # claims a MAC that lives on our bridge
                continue
            if lane is not None:
                if learned:
                    lane.flush()      # a MAC new or moved: no cached decision about it may stand
                if cache:
                    lane.cache_rx(src, link.c)
            good.append(f)
        if not good:
            return
        if inject:
            fd = self.tap_fd
            for f in good:
                try:
                    os.write(fd, f)
                except OSError:
                    st.drops["tap_write"] += 1
        for out in outs:
            self._send(out, good, origin_b, st)
