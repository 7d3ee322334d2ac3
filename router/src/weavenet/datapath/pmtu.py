"""Path-MTU discovery for one sleeve connection, sans-I/O (like Weave's sleeve, which probes too).

Sleeve datagrams go out with DF set and the kernel's PMTU cache ignored (IP_PMTUDISC_PROBE), so this
prober is the only authority on how big a datagram may be: an ICMP "fragmentation needed", forged or
not, changes nothing here. It sends probes (datagrams of a given IP size, each with a fresh random
nonce) and believes only an echo of a nonce it sent that reports the size it sent; so whatever the
network says, the verified size stays within [FLOOR, ceiling] (ceiling = the MTU of the route to the peer).

Search: rounds of up to ROUND_PROBES probes spread over (lo, hi], plus one of size lo as a control; the
largest answered size becomes lo, the smallest unanswered one above it hi + 1, until hi - lo < STEP (a
round whose control is lost changes nothing; after VOID_FREE such rounds in a row the next ones back off, up
to VOID_BACKOFF_MAX apart: a peer that never answers must not cost a burst of probes every second). Then the
size in use is confirmed every CONFIRM_EVERY seconds (MISSES unanswered confirmations in a row: search again
from the floor, sending at the floor meanwhile) and a bigger one looked for every RESEARCH_EVERY seconds;
the engine runs a `resting` prober only on a link that carried frames since its last look (idle and
fast-path links cost no probes).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

FLOOR = 576            # IPv4's minimum datagram size every path must carry (RFC 791)
CEILING_MAX = 65535
STEP = 8               # search resolution (bytes)
ROUND_PROBES = 4
ROUND_TIMEOUT = 1.0    # seconds a probe may take to be answered
CONFIRM_EVERY = 10.0
RESEARCH_EVERY = 120.0
MISSES = 2
VOID_FREE = 3          # void rounds (nothing answered, not even the control) retried at once; then backing off
VOID_BACKOFF_MAX = 30.0   # a peer that never answers (no sleeve, UDP blocked) costs a round per 30 s, not per second
IP_MTU = 14            # <linux/in.h> getsockopt: the MTU of a connected socket's route
UDP_IP_OVERHEAD = 28   # IPv4 + UDP headers: a probe of size S carries S - 28 bytes of UDP payload


def clamp(mtu: int) -> int:
    return max(FLOOR, min(CEILING_MAX, int(mtu)))


# Room the overlay leaves for encapsulation, as Weave does (1500-byte underlay -> 1376): the sleeve's
# IP/UDP/sleeve headers, virtio-net header and tag fit in one datagram, and VXLAN's 50 bytes with room to spare.
ENCAP_RESERVE = 124
OVERLAY_MIN, OVERLAY_MAX = 576, 9000          # the --mtu setting's range
DEFAULT_UNDERLAY = 1500                       # no route to ask about


def _kernel_route_mtu(ip: str) -> int | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((ip, 6783))
            return s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return None


def overlay_mtu(peers: list[str]) -> int:
    """The overlay MTU derived from the underlay: the smallest route MTU towards the peers given as IPv4
    addresses (else the default route's), minus ENCAP_RESERVE, within the setting's range."""
    hosts = [p.rsplit(":", 1)[0] if p.count(":") == 1 else p for p in peers]
    ips = [h for h in hosts if _is_ipv4(h)] or ["203.0.113.1"]   # TEST-NET-3: whatever the default route is
    mtus = [m for m in map(_kernel_route_mtu, ips) if m]
    underlay = min(mtus) if mtus else DEFAULT_UNDERLAY
    return max(OVERLAY_MIN, min(OVERLAY_MAX, underlay - ENCAP_RESERVE))


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return host.count(".") == 3


def route_mtu(ip: str, port: int) -> int:
    """The MTU of the kernel's route to ip (its device's, or a smaller route/PMTU one), clamped to
    [FLOOR, CEILING_MAX]; FLOOR when there is no route. A connect() on UDP sends nothing."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((ip, port))
            return clamp(s.getsockopt(socket.IPPROTO_IP, IP_MTU))
    except OSError:
        return FLOOR


@dataclass
class Prober:
    ceiling: int
    now: float = 0.0
    pmtu: int = FLOOR                    # the verified size in use (IP packet bytes)
    lo: int = FLOOR                      # largest size known to pass
    hi: int = FLOOR                      # largest size that may pass
    searching: bool = True
    outstanding: dict[bytes, int] = field(default_factory=dict)   # nonce -> probe size
    answered: set[int] = field(default_factory=set)
    round_ends: float = 0.0
    next_confirm: float = 0.0
    next_research: float = 0.0
    misses: int = 0
    ignored: int = 0                     # replies that matched no probe (late, forged, wrong size)
    rounds: int = 0
    voids: int = 0                       # void rounds in a row

    def __post_init__(self) -> None:
        self.ceiling = clamp(self.ceiling)
        self.pmtu = self.lo = FLOOR
        self.hi = self.ceiling
        self.searching = True
        self.round_ends = self.now    # the first tick starts a round

    # --- events in ---------------------------------------------------------------------------
    def on_reply(self, nonce: bytes, size: int, now: float) -> bool:
        """An echo from the peer: counts only if it carries the nonce and the size of a probe we sent."""
        want = self.outstanding.get(nonce)
        if want is None or want != size:
            self.ignored += 1
            return False
        del self.outstanding[nonce]
        if not self.searching:                       # the confirmation of the size in use
            self.misses = 0
            return True
        self.answered.add(size)
        if not self.outstanding:
            self._end_round(now)
        return True

    def on_ceiling(self, ceiling: int, now: float) -> None:
        """The route's MTU changed (a send failed with EMSGSIZE): stay within it and search again."""
        self.ceiling = clamp(ceiling)
        if self.pmtu > self.ceiling:
            self.pmtu = self.ceiling
        self._search(min(self.pmtu, self.ceiling), self.ceiling, now)

    @property
    def resting(self) -> bool:
        """Settled (only confirmations due) or backing off from a peer that never answers: what is left to
        do only matters to traffic, so the engine skips it on a link that sent nothing since its last look."""
        return not self.searching or self.voids >= VOID_FREE

    # --- time ----------------------------------------------------------------------------------
    def due(self) -> float:
        """When tick() next has something to do (until an event in: on_reply, on_ceiling)."""
        return self.round_ends if self.searching else self.next_confirm

    def tick(self, now: float) -> list[tuple[bytes, int]]:
        """Probes to send now: (nonce, IP size) pairs."""
        if not self.searching:
            if now < self.next_confirm:
                return []
            if self.outstanding:                      # the last confirmation went unanswered
                self.misses += 1
            if self.misses >= MISSES:                # the path shrank: back to the floor, search again
                self.pmtu = FLOOR
                self._search(FLOOR, self.ceiling, now)
            elif now >= self.next_research and self.pmtu < self.ceiling:
                self._search(self.pmtu, self.ceiling, now)   # room for more? (the size in use stays)
            else:
                self.outstanding.clear()
                self.next_confirm = now + CONFIRM_EVERY
                return [self._probe(self.pmtu)]
        if now < self.round_ends:
            return []
        if self.rounds:
            self._end_round(now)
            if now < self.round_ends:                 # void rounds backing off
                return []
        return self._round(now) if self.searching else []

    # --- internals -----------------------------------------------------------------------------
    def _search(self, lo: int, hi: int, now: float) -> None:
        self.lo, self.hi, self.searching = lo, hi, True
        self.outstanding.clear()
        self.answered.clear()
        self.rounds = 0
        self.voids = 0
        self.round_ends = now

    def _probe(self, size: int) -> tuple[bytes, int]:
        nonce = os.urandom(8)
        self.outstanding[nonce] = size
        return nonce, size

    def _round(self, now: float) -> list[tuple[bytes, int]]:
        lo, hi = self.lo, self.hi
        span = hi - lo
        # lo itself goes too, as the control: a round in which even it is lost says nothing about sizes
        # (the peer was not ready yet, or the path lost everything for a moment).
        sizes = sorted({lo, hi} | {lo + span * k // ROUND_PROBES for k in range(1, ROUND_PROBES)})
        self.rounds += 1
        self.round_ends = now + ROUND_TIMEOUT
        return [self._probe(s) for s in sizes]

    def _end_round(self, now: float) -> None:
        if self.lo not in self.answered:        # a void round: try again (later, after a few in a row)
            self.outstanding.clear()
            self.answered.clear()
            self.voids += 1
            over = self.voids - VOID_FREE
            self.round_ends = now + (min(VOID_BACKOFF_MAX, ROUND_TIMEOUT * 2 ** min(over, 8)) if over > 0 else 0.0)
            self.rounds = 0                      # none out: the next tick after round_ends starts one
            return
        self.voids = 0
        sent = set(self.outstanding.values()) | self.answered
        ok = [s for s in self.answered if s > self.lo]
        if ok:
            self.lo = max(ok)
        failed = [s for s in sent - self.answered if s > self.lo]
        if failed:
            self.hi = min(failed) - 1
        self.hi = max(self.hi, self.lo)
        self.outstanding.clear()
        self.answered.clear()
        self.round_ends = now
        self.pmtu = self.lo                           # usable at once: it was answered
        if self.hi - self.lo < STEP:
            self.searching = False
            self.misses = 0
            self.next_confirm = now + CONFIRM_EVERY
            self.next_research = now + RESEARCH_EVERY
