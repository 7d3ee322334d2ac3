"""Fast datapath: a kernel VXLAN device carries traffic to directly connected peers, so frames never
enter Python. The router programs the VXLAN FDB and keeps checking each path with heartbeat frames
sent through the device itself; a path that stops working falls back to the sleeve, and returns.

Heartbeats are Ethernet frames (ethertype 0x88b5, local experimental) from our VXLAN MAC to the peer's
VXLAN MAC, for which the router installs a static FDB entry. On arrival the bridge hands them to its
own stack (the destination is the port's own MAC), which drops them: nothing leaks to containers.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import socket
import struct
import time
from collections.abc import Collection
from dataclasses import dataclass

from ..net.sockbuf import set_rcvbuf

ETHERTYPE = 0x88B5
HB_MAGIC = b"WNFD"
# Heartbeats leave on a grid of this interval (all peers in one tick, the control heartbeats' tick too)
# and are read on the ticks, with the kernel's arrival stamps: no wake-up per frame.
HB_INTERVAL = 1.0
# No heartbeat for ASK_AFTER: we ask the peer over TCP to prove its path, and it answers at once with a
# heartbeat through the path and its status over TCP. A path is silent (down) once nothing came through it
# for RX_TIMEOUT although its router proved alive since then (its answer, or any fast-path message later than
# its next heartbeat was due: see control_heard), REPLY_GRACE ago: a cut is seen in ~1.6 s, one lost
# heartbeat costs an ask, not a fallback. A peer silent on both (overloaded, stalled, or gone: its TCP
# connection then ends) keeps its path: falling back would only reprogram the FDB, and flap back, on every stall.
ASK_AFTER = 1.3
RX_TIMEOUT = 1.5
REPLY_GRACE = 0.3
HB_LATE = HB_INTERVAL + 0.2  # a fast-path message this long after its last heartbeat proves its router alive
ANSWER_MIN = 0.5           # a peer's asks are answered at most this often (the rest are ignored)
# Damping: a path that falls back again within FLAP_FORGET of its return waits HOLD_BASE, doubling with
# each such fall up to HOLD_MAX, heard all along, before it returns. A path that flaps (an overloaded host)
# then reprograms the FDB a few times a minute, not on every stall; a single fall returns at once.
FLAP_FORGET = 60.0
HOLD_BASE = 2.0
HOLD_MAX = 60.0
# "I hear you" is sent at once on change (over TCP: not lost), else this often: the refresh only catches a
# peer whose data plane stopped telling while its router goes on (a bug); per peer, so not often.
STATUS_REFRESH = 10.0
STATUS_VALID = 25.0
ZERO_MAC = "00:00:00:00:00:00"
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35        # (SO_TIMESTAMPNS_OLD: a struct timespec of two longs)
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_IGNORE_OUTGOING, PACKET_STATISTICS = 263, 23, 6
HB_SNAP = 64               # bytes of a heartbeat frame read (it is parsed from its first 24)
# Heartbeats wait in the socket between ticks (up to HB_INTERVAL, one per peer, each a full-size skb):
# room for ~1000 of them; beyond that the kernel drops and counts (see queue_drops).
RCVBUF = 4 << 20
_STAMP = struct.Struct("@ll")


@dataclass
class PathState:
    ip: str
    remote_mac: str
    last_rx: float = 0.0        # when its last heartbeat arrived (the kernel's stamp)
    remote_ok_at: float = 0.0   # when the peer last told us it hears our heartbeats
    remote_ok: bool = False
    active: bool = False
    hb_installed: bool = False
    told: bool | None = None    # what we last told the peer
    told_at: float = 0.0
    ctrl_at: float = 0.0        # when the peer's router last sent us a control message (TCP)
    proof_at: float = 0.0       # its router's first fast-path message later than its next heartbeat was due (0: none)
    asked_at: float = 0.0       # when we last asked it to prove its path
    answer_due: bool = False    # it asked us: a heartbeat through the path and our status, at the next tick
    answered_at: float = 0.0
    hb_frame: bytes = b""       # our heartbeat to it, built once (the same bytes every time)
    falls: int = 0              # falls back in a row, each within FLAP_FORGET of the path's return
    fell_at: float = 0.0
    up_at: float = 0.0
    hold_until: float = 0.0     # damped: not back before this

    def silent(self, now: float) -> bool:
        """Its heartbeats stopped while its router proved alive over TCP: the VXLAN path is broken."""
        if not self.last_rx:
            return True
        return bool(self.proof_at) and now - self.last_rx > RX_TIMEOUT and now >= self.proof_at + REPLY_GRACE

    def status_stale(self, now: float) -> bool:
        """The peer's "I hear you" was not refreshed although it went on talking over TCP."""
        return now - self.remote_ok_at > STATUS_VALID and self.ctrl_at > self.remote_ok_at + STATUS_VALID


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def heartbeat_frame(src_mac: str, dst_mac: str, ourname: str, now: float, size: int = 0) -> bytes:
    """Padded to `size` (the overlay MTU's frames): a path that cannot carry full-size VXLAN packets (a peer
    behind a smaller MTU, an underlay dropping fragments) loses its heartbeats and falls back to the sleeve,
    which discovers its path MTU, instead of staying up and losing every big frame."""
    frame = (mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack(">H", ETHERTYPE) + HB_MAGIC
             + bytes.fromhex(ourname.replace(":", "")) + struct.pack(">d", now))
    return frame + bytes(max(0, size - len(frame)))


def parse_heartbeat(frame: bytes) -> str | None:
    if len(frame) < 14 + 4 + 6 or frame[12:14] != struct.pack(">H", ETHERTYPE) or frame[14:18] != HB_MAGIC:
        return None
    return frame[18:24].hex(":")


class FastPathDecider:
    """Pure: which candidate peers are on the fast path now, and what changed."""

    def __init__(self) -> None:
        self.paths: dict[str, PathState] = {}

    def set_candidates(self, cands: dict[str, tuple[str, str]]) -> dict[str, PathState]:
        """cands: peer -> (ip, remote VXLAN MAC). Returns the paths removed (to clean up), by peer."""
        gone = {n: p for n, p in self.paths.items() if n not in cands or cands[n] != (p.ip, p.remote_mac)}
        for n in gone:
            del self.paths[n]
        for n, (ip, mac) in cands.items():
            self.paths.setdefault(n, PathState(ip, mac))
        return gone

    def shift(self, seconds: float) -> None:
        """Forgive `seconds` of silence that were our own stall."""
        for p in self.paths.values():
            if p.last_rx:
                p.last_rx += seconds
            if p.remote_ok_at:
                p.remote_ok_at += seconds
            if p.proof_at:
                p.proof_at += seconds

    def heard(self, peer: str, at: float) -> None:
        """Its heartbeat arrived at `at`: a proof of its router's life older than the next one due is void."""
        p = self.paths.get(peer)
        if p is not None and at > p.last_rx:
            p.last_rx = at
            if p.proof_at <= at + HB_LATE:
                p.proof_at = 0.0

    def control_heard(self, peer: str, now: float, proof: bool = True) -> bool:
        """Its router sent a control message: it is alive. `proof`: a fast-path message (a status, an
        answer, a MAC advert), which leaves in the same tick as its heartbeats or within HB_INTERVAL of
        the last; not a control heartbeat, which may leave from a read callback while its ticker is
        starved. True when that is the first proof since its path went quiet (the caller then looks at
        the path REPLY_GRACE later)."""
        p = self.paths.get(peer)
        if p is None:
            return False
        p.ctrl_at = now
        if proof and p.last_rx and not p.proof_at and now > p.last_rx + HB_LATE:
            p.proof_at = now
            return True
        return False

    def ask_due(self, peer: str, now: float) -> bool:
        """Ask it to prove its path now? Once per quiet spell, only where our word matters (we told it
        we hear it, or the path carries traffic), and not when its router already proved alive."""
        p = self.paths[peer]
        if (p.last_rx and not p.proof_at and p.asked_at <= p.last_rx and now - p.last_rx > ASK_AFTER
                and (p.told or p.active)):
            p.asked_at = now
            return True
        return False

    def asked(self, peer: str, now: float) -> None:
        """It asked us to prove our path to it: answered at the next tick, at most every ANSWER_MIN."""
        p = self.paths.get(peer)
        if p is not None and now - p.answered_at >= ANSWER_MIN:
            p.answer_due, p.answered_at = True, now

    def remote_status(self, peer: str, ok: bool, now: float) -> None:
        p = self.paths.get(peer)
        if p is not None:
            p.remote_ok, p.remote_ok_at = ok, now

    def status_due(self, peer: str, now: float, force: bool = False) -> bool | None:
        """What to tell `peer` about its heartbeats now, or None if nothing is due (`force`: tell anyway)."""
        p = self.paths[peer]
        hears = self.hears(peer, now)
        if force or hears != p.told or now - p.told_at >= STATUS_REFRESH:
            p.told, p.told_at = hears, now
            return hears
        return None

    def hears(self, peer: str, now: float) -> bool:
        p = self.paths.get(peer)
        return p is not None and not p.silent(now)

    def evaluate(self, now: float, direct: Collection[str] | None = None) -> tuple[list[str], list[str]]:
        """(peers that went up, peers that went down). `direct`: the peers routed directly (None: all); a path
        to any other is down (the mesh routes around the connection: its far end gave it up, or we did)."""
        up, down = [], []
        for n, p in self.paths.items():
            ok = self._why_not_up(n, p, now, direct) is None
            if ok and not p.active:
                if now < p.hold_until:
                    continue
                p.active, p.up_at = True, now
                up.append(n)
            elif not ok and p.active:
                p.active = False
                down.append(n)
                p.falls = p.falls + 1 if p.fell_at and now - p.up_at < FLAP_FORGET else 1
                p.fell_at = now
                p.hold_until = now + min(HOLD_MAX, HOLD_BASE * 2 ** (p.falls - 2)) if p.falls > 1 else 0.0
        return up, down

    def why_down(self, peer: str, now: float, direct: Collection[str] | None = None) -> str:
        """Why `evaluate` takes the path down (for the log)."""
        return self._why_not_up(peer, self.paths[peer], now, direct) or "up"

    @staticmethod
    def _why_not_up(peer: str, p: PathState, now: float, direct: Collection[str] | None) -> str | None:
        """None when the path may carry traffic; else why not. `evaluate` and the log share this one rule."""
        if p.silent(now):
            return f"none of its heartbeats for {now - p.last_rx:.1f}s while its router talks" if p.last_rx \
                else "none of its heartbeats yet"
        if not p.remote_ok:
            return "it hears none of ours"
        if p.status_stale(now):
            return "its word on our heartbeats is stale"
        if direct is not None and peer not in direct:
            return "not routed directly"
        return None

    def active(self) -> frozenset[str]:
        return frozenset(n for n, p in self.paths.items() if p.active)


def status_message(hears: bool, ask: bool = False) -> bytes:
    return json.dumps({"fastdp_rx": hears, "ask": True} if ask else {"fastdp_rx": hears}).encode()


def parse_status(body: bytes) -> tuple[bool, bool]:
    """(it hears our heartbeats, it asks us to prove our path). Anything malformed: (False, False)."""
    try:
        msg = json.loads(body)
    except ValueError:
        return False, False
    if not isinstance(msg, dict):
        return False, False
    return msg.get("fastdp_rx") is True, msg.get("ask") is True


def open_heartbeat_socket(ifname: str) -> socket.socket:
    """Raw socket on the VXLAN device: sends heartbeats out through it and sees incoming ones before
    the bridge takes them (ETH_P_ALL taps run ahead of the bridge's rx handler)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    # Classic BPF: accept only our ethertype, and only its first HB_SNAP bytes (the rest is padding: no
    # copy of a full-size frame per heartbeat). ldh [12]; jeq #0x88b5 jt 0 jf 1; ret #HB_SNAP; ret #0
    prog = [(0x28, 0, 0, 12), (0x15, 0, 1, ETHERTYPE), (0x06, 0, 0, HB_SNAP), (0x06, 0, 0, 0)]
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    with contextlib.suppress(OSError):   # our own heartbeats are not read back (Linux >= 4.20; drain checks too)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)   # read on the ticks: the arrival time comes with each
    set_rcvbuf(s, RCVBUF)
    s.bind((ifname, ETH_P_ALL))  # CPython applies htons() to the protocol itself here
    s.setblocking(False)
    return s


def drain(s: socket.socket, limit: int) -> list[tuple[str, float]]:
    """(peer, arrival on time.monotonic()'s clock) for the heartbeats waiting, incoming frames only, at most
    `limit` of them (a flood waits for the next tick, or the kernel drops it: see queue_drops)."""
    out: list[tuple[str, float]] = []
    offset = time.time() - time.monotonic()
    now = time.monotonic()
    space = socket.CMSG_SPACE(_STAMP.size)
    for _ in range(limit):
        try:
            frame, anc, _flags, addr = s.recvmsg(HB_SNAP, space, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        if addr[2] == PACKET_OUTGOING:
            continue
        name = parse_heartbeat(frame)
        if not name:
            continue
        at = now
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _STAMP.size:
                sec, nsec = _STAMP.unpack_from(data)
                at = min(now, sec + nsec / 1e9 - offset)   # (a wall clock step: never in the future)
        out.append((name, at))
    return out


def queue_drops(s: socket.socket) -> int:
    """Heartbeats the kernel dropped (socket full) since the last call: PACKET_STATISTICS resets on read."""
    try:
        _packets, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except OSError:
        return 0
    return drops
