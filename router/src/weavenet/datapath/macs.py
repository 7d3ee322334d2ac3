"""MAC learning: which peer each overlay MAC lives on, learned from received frames, with expiry."""

from __future__ import annotations

import threading

DEFAULT_TTL = 300.0


def mac_str(b: bytes) -> str:
    return b.hex(":")


class MacTable:
    """Thread-safe enough for one writer thread and readers: single dict operations only."""

    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        self.ttl = ttl
        self._entries: dict[bytes, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.moves = 0

    def learn(self, mac: bytes, peer: str, now: float) -> bool:
        """Record that `mac` is behind `peer`; True if this is new or the MAC moved."""
        old = self._entries.get(mac)
        if old is not None and old[0] == peer and now - old[1] < 1.0:
            return False  # refreshed recently: skip the write on the hot path
        self._entries[mac] = (peer, now)
        if old is not None and old[0] != peer:
            self.moves += 1
            return True
        return old is None

    def lookup(self, mac: bytes, now: float) -> str | None:
        e = self._entries.get(mac)
        if e is None or now - e[1] > self.ttl:
            return None
        return e[0]

    def forget_peer(self, peer: str) -> list[bytes]:
        with self._lock:
            gone = [m for m, (p, _) in list(self._entries.items()) if p == peer]
            for m in gone:
                self._entries.pop(m, None)
        return gone

    def macs_of(self, peer: str) -> list[bytes]:
        return [m for m, (p, _) in list(self._entries.items()) if p == peer]

    def expire(self, now: float) -> int:
        with self._lock:
            old = [m for m, (_, t) in list(self._entries.items()) if now - t > self.ttl]
            for m in old:
                self._entries.pop(m, None)
        return len(old)

    def snapshot(self, now: float) -> list[dict]:
        return [{"mac": mac_str(m), "peer": p, "age_s": round(now - t, 1)}
                for m, (p, t) in sorted(list(self._entries.items())) if now - t <= self.ttl]
