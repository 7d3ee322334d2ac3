"""The sleeve engine: two threads moving frames between the TAP device and the UDP socket.

Per-frame work never runs on the asyncio loop. The control plane publishes an immutable ``View``
(routes, links, fast-path peers) and swaps it atomically; the threads only read it.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from ..mesh.routes import RouteTable
from . import sleeve
from .forward import Forwarder, Out
from .macs import MacTable
from .replay import ReplayWindow

log = logging.getLogger("weavenet.datapath")

VNET_HDR = 10
BATCH_BYTES = 60000      # frames queued together share one datagram up to this size
BATCH_FRAMES = 64
SOCK_BUF = 8 * 1024 * 1024
IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0  # <linux/in.h>; not exported by Python's socket module


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

    def __post_init__(self) -> None:
        self.name_b = sleeve.name_bytes(self.name)


@dataclass(frozen=True)
class View:
    ourself: str
    routes: RouteTable
    links: dict[str, PeerLink]
    fastdp: frozenset[str] = frozenset()

    def link_by_bytes(self) -> dict[bytes, PeerLink]:
        return {lk.name_b: lk for lk in self.links.values()}


class Engine:
    def __init__(self, ourself: str, tap_fd: int, port: int, macs: MacTable, vnet_hdr: bool = True) -> None:
        self.ourself = ourself
        self.our_b = sleeve.name_bytes(ourself)
        self.tap_fd = tap_fd
        self.off = VNET_HDR if vnet_hdr else 0
        self.macs = macs
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
        # Let the kernel fragment datagrams larger than the path MTU rather than drop them: batched
        # and GSO frames exceed it by design, and a container's TCP never sees a blackhole.
        self.sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        self.sock.bind(("0.0.0.0", port))
        self.sock.settimeout(0.5)
        self._view = View(ourself, RouteTable({ourself: []}, ourself), {})
        self._by_bytes: dict[bytes, PeerLink] = {}
        self._fwd = Forwarder(ourself, self._view.routes, frozenset(), macs)
        self.frames = Counter()   # (peer, direction) -> frames
        self.bytes = Counter()
        self.drops = Counter()    # reason -> count
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- control plane side ---------------------------------------------------------------------
    def publish(self, view: View) -> None:
        """Swap in new routes/links; each attribute assignment is atomic for the threads."""
        self._by_bytes = view.link_by_bytes()
        self._fwd = Forwarder(view.ourself, view.routes, view.fastdp, self.macs)
        self._view = view

    def start(self) -> None:
        for target, name in ((self._tap_loop, "weave-tap-rx"), (self._udp_loop, "weave-udp-rx")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.sock.close()

    # --- TAP -> peers ----------------------------------------------------------------------------
    def _tap_loop(self) -> None:
        os.set_blocking(self.tap_fd, False)
        poller = select.poll()
        poller.register(self.tap_fd, select.POLLIN)
        off = self.off
        while not self._stop.is_set():
            if not poller.poll(500):
                continue
            groups: dict[Out, list[bytes]] = {}
            sizes: dict[Out, int] = {}
            now = time.monotonic()
            fwd = self._fwd
            for _ in range(BATCH_FRAMES):
                try:
                    frame = os.read(self.tap_fd, 65600)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.EBADF:
                        return
                    raise
                if len(frame) < off + 14:
                    continue
                outs = fwd.from_local(frame[off:off + 6], now)
                if isinstance(outs, str):
                    self.drops[outs] += 1
                    continue
                for out in outs:
                    n = len(frame) + 4
                    if sizes.get(out, 0) + n > BATCH_BYTES and out in groups:
                        self._send(out, groups.pop(out), self.our_b)
                        sizes[out] = 0
                    groups.setdefault(out, []).append(frame)
                    sizes[out] = sizes.get(out, 0) + n
            for out, frames in groups.items():
                self._send(out, frames, self.our_b)

    def _send(self, out: Out, frames: list[bytes], origin_b: bytes) -> None:
        link = self._view.links.get(out.hop)
        if link is None:
            self.drops["no_route"] += len(frames)
            return
        dest_b = sleeve.name_bytes(out.dest) if out.dest else sleeve.BROADCAST
        dg = sleeve.encode(self.our_b, next(link.seq), origin_b, dest_b, frames, link.tx_key, out.relay_only)
        if len(dg) > sleeve.MAX_DATAGRAM:
            if len(frames) > 1:  # split the batch; a single frame this big cannot be carried
                half = len(frames) // 2
                self._send(out, frames[:half], origin_b)
                self._send(out, frames[half:], origin_b)
            else:
                self.drops["too_big"] += 1
            return
        try:
            self.sock.sendto(dg, link.addr)
        except OSError as e:
            self.drops["send_error"] += len(frames)
            log.debug("sleeve send to %s failed: %s", link.name, e)
            return
        self.frames[(out.hop, "tx")] += len(frames)
        self.bytes[(out.hop, "tx")] += len(dg)

    # --- peers -> TAP / relay --------------------------------------------------------------------
    def _udp_loop(self) -> None:
        sock = self.sock
        off = self.off
        while not self._stop.is_set():
            try:
                dg = sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            try:
                self._receive(dg, off)
            except sleeve.SleeveError as e:
                self.drops[e.reason] += 1

    def _receive(self, dg: bytes, off: int) -> None:
        sender, seq, encrypted = sleeve.peek(dg)
        link = self._by_bytes.get(sender)
        if link is None:
            self.drops["unknown_peer"] += 1
            return
        key = link.rx_key
        if encrypted != (key is not None):
            self.drops["auth"] += 1
            return
        if key is not None and not link.replay.check(seq):
            self.drops["replay"] += 1
            return
        origin_b, dest_b, relay_only, frames = sleeve.decode_body(dg, seq, key)
        if key is not None:
            link.replay.accept(seq)
        self.frames[(link.name, "rx")] += len(frames)
        self.bytes[(link.name, "rx")] += len(dg)
        origin = sleeve.name_str(origin_b)
        dest = None if dest_b == sleeve.BROADCAST else sleeve.name_str(dest_b)
        decision = self._fwd.from_sleeve(origin, dest, relay_only)
        if isinstance(decision, str):
            self.drops[decision] += len(frames)
            return
        inject, outs = decision
        now = time.monotonic()
        learn = self.macs.learn
        for f in frames:
            if len(f) >= off + 12:
                learn(f[off + 6:off + 12], origin, now)
        if inject:
            fd = self.tap_fd
            for f in frames:
                try:
                    os.write(fd, f)
                except OSError:
                    self.drops["tap_write"] += 1
        for out in outs:
            self._send(out, frames, origin_b)
