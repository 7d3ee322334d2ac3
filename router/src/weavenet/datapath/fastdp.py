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
from collections.abc import Collection
from dataclasses import dataclass

ETHERTYPE = 0x88B5
HB_MAGIC = b"WNFD"
HB_INTERVAL = 0.5
# No heartbeat for this long while the peer's control messages still arrive: the path is down (fallback well
# within 3 s). A peer silent on both (overloaded, stalled, or gone: its TCP connection then ends) keeps its
# path: falling back would only reprogram the FDB, and flap back, on every stall.
RX_TIMEOUT = 1.5
# "I hear you" is sent at once on change (over TCP: not lost), else this often: the refresh only catches a
# peer whose data plane stopped telling while its router goes on (a bug); per peer, so not often.
STATUS_REFRESH = 10.0
STATUS_VALID = 25.0
ZERO_MAC = "00:00:00:00:00:00"
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_IGNORE_OUTGOING = 263, 23
HB_SNAP = 64               # bytes of a heartbeat frame read (it is parsed from its first 24)


@dataclass
class PathState:
    ip: str
    remote_mac: str
    last_rx: float = 0.0
    remote_ok_at: float = 0.0   # when the peer last told us it hears our heartbeats
    remote_ok: bool = False
    active: bool = False
    hb_installed: bool = False
    told: bool | None = None    # what we last told the peer
    told_at: float = 0.0
    ctrl_at: float = 0.0        # when the peer's last control-plane heartbeat (TCP) arrived
    hb_frame: bytes = b""       # our heartbeat to it, built once (the same bytes every time)

    def silent(self, now: float) -> bool:
        """Its heartbeats stopped while the peer went on talking over TCP: the VXLAN path is broken."""
        return now - self.last_rx > RX_TIMEOUT and (not self.last_rx or self.ctrl_at > self.last_rx + HB_INTERVAL)

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

    def heard(self, peer: str, now: float) -> None:
        if peer in self.paths:
            self.paths[peer].last_rx = now

    def control_heard(self, peer: str, now: float) -> None:
        """A control-plane heartbeat of the peer arrived (it is alive: silence on its path is the path's)."""
        p = self.paths.get(peer)
        if p is not None:
            p.ctrl_at = now

    def remote_status(self, peer: str, ok: bool, now: float) -> None:
        p = self.paths.get(peer)
        if p is not None:
            p.remote_ok, p.remote_ok_at = ok, now

    def status_due(self, peer: str, now: float) -> bool | None:
        """What to tell `peer` about its heartbeats now, or None if nothing is due."""
        p = self.paths[peer]
        hears = self.hears(peer, now)
        if hears != p.told or now - p.told_at >= STATUS_REFRESH:
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
            ok = not p.silent(now) and p.remote_ok and not p.status_stale(now) and (direct is None or n in direct)
            if ok and not p.active:
                p.active = True
                up.append(n)
            elif not ok and p.active:
                p.active = False
                down.append(n)
        return up, down

    def active(self) -> frozenset[str]:
        return frozenset(n for n, p in self.paths.items() if p.active)


def status_message(hears: bool) -> bytes:
    return json.dumps({"fastdp_rx": hears}).encode()


def parse_status(body: bytes) -> bool:
    try:
        return bool(json.loads(body).get("fastdp_rx"))
    except (ValueError, AttributeError):
        return False


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
    s.bind((ifname, ETH_P_ALL))  # CPython applies htons() to the protocol itself here
    s.setblocking(False)
    return s


def drain(s: socket.socket) -> list[str]:
    """Peers whose heartbeats arrived (incoming frames only)."""
    names = []
    while True:
        try:
            frame, addr = s.recvfrom(HB_SNAP)
        except BlockingIOError:
            return names
        if addr[2] == PACKET_OUTGOING:
            continue
        name = parse_heartbeat(frame)
        if name:
            names.append(name)

