"""MAC learning: which peer each overlay MAC lives on, learned from received frames, with expiry.

Bounded: an LRU of at most ``cap`` entries (a peer sending frames from random source MACs evicts the
least recently seen ones, counted in ``evictions``), so memory does not grow with what is received.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

DEFAULT_TTL = 300.0
DEFAULT_CAP = 8192


def mac_str(b: bytes) -> str:
    return b.hex(":")


class MacTable:
    """Thread-safe: the engine's two threads learn, the control plane expires and reports; every
    change holds the lock. ``lookup`` is a single dict read (atomic under the GIL) on the hot path."""

    def __init__(self, ttl: float = DEFAULT_TTL, cap: int = DEFAULT_CAP, local: str | None = None) -> None:
        self.ttl = ttl
        self.cap = cap
        self.local = local  # our own peer name: MACs learned from our bridge are never moved to a remote
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.moves = 0
        self.evictions = 0
        self.refused = 0

    def learn(self, mac: bytes, peer: str, now: float) -> bool | None:
        """Record that `mac` is behind `peer`: True if this is new or the MAC moved, False if nothing
        changed, None if refused (a live local MAC claimed by a remote peer: a hijack attempt)."""
        old = self._entries.get(mac)
        if old is not None and old[0] == peer and now - old[1] < 1.0:
            return False  # refreshed recently: skip the lock and the write on the hot path
        with self._lock:
            old = self._entries.get(mac)
            if (old is not None and old[0] == self.local and peer != self.local
                    and now - old[1] <= self.ttl):
                self.refused += 1
                return None
            self._entries[mac] = (peer, now)
            self._entries.move_to_end(mac)
            if len(self._entries) > self.cap:
                self._entries.popitem(last=False)
                self.evictions += 1
        if old is not None and old[0] != peer:
            self.moves += 1
            return True
        return old is None

    def lookup(self, mac: bytes, now: float) -> str | None:
        e = self._entries.get(mac)
        if e is None or now - e[1] > self.ttl:
            return None
        return e[0]

    def _items(self) -> list[tuple[bytes, tuple[str, float]]]:
        with self._lock:
            return list(self._entries.items())

    def forget_peer(self, peer: str) -> list[bytes]:
        with self._lock:
            gone = [m for m, (p, _) in self._entries.items() if p == peer]
            for m in gone:
                del self._entries[m]
        return gone

    def macs_of(self, peer: str) -> list[bytes]:
        return [m for m, (p, _) in self._items() if p == peer]

    def expire(self, now: float) -> int:
        with self._lock:
            old = [m for m, (_, t) in self._entries.items() if now - t > self.ttl]
            for m in old:
                del self._entries[m]
        return len(old)

    def __len__(self) -> int:
        return len(self._entries)

    def snapshot(self, now: float) -> list[dict]:
        return [{"mac": mac_str(m), "peer": p, "age_s": round(now - t, 1)}
                for m, (p, t) in sorted(self._items()) if now - t <= self.ttl]
