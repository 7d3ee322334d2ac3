"""Which addresses to dial and when: explicit targets, discovered peers, jittered exponential backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
BACKOFF_AFTER_REFUSAL = 10.0  # a peer that refused us (password, version) is retried slowly
# A peer we were connected to is most often restarting (an upgrade, `weave stop --restart`): it is redialled
# every RECONNECT_INTERVAL for RECONNECT_QUICK failed dials (~3 s) before the backoff grows, so the sleeve is
# back within a quarter second of the new router listening instead of after the 0.5+1+2 s... schedule.
RECONNECT_QUICK = 12
RECONNECT_INTERVAL = 0.25
# Two peers that discover each other both want to dial: the peer with the lower name dials at once (its
# connection is the one the duplicate tie-break keeps), the other waits this long (jittered) in case it
# cannot (one-way reachability). A join into a full mesh of N then costs N handshakes, not 2N with N
# duplicates closed again (measured: a third of the connections made while a 48-router lab formed).
DISCOVERED_DEFER = 5.0


@dataclass
class Target:
    address: str
    explicit: bool             # given by the operator (command line / connect) vs. discovered
    state: str = "idle"        # idle | connecting | connected | retrying | failed
    attempts: int = 0
    next_try: float = 0.0
    info: str = ""
    conn_id: int | None = None
    quick: int = 0             # quick redials left after a lost connection (RECONNECT_QUICK)


class ConnectionMaker:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.targets: dict[str, Target] = {}
        self._rng = rng or random.Random()
        self.version = 0   # bumped by every change here: the mesh re-checks its targets only then (or when due)

    def add(self, address: str, explicit: bool, now: float, defer: bool = False) -> None:
        """`defer`: a discovered peer that is to dial us (see DISCOVERED_DEFER): our first dial waits."""
        t = self.targets.get(address)
        if t is None:
            wait = DISCOVERED_DEFER * self._rng.uniform(0.75, 1.25) if defer and not explicit else 0.0
            self.targets[address] = Target(address, explicit, next_try=now + wait)
            self.version += 1
        elif explicit and not t.explicit:
            t.explicit = True
        if t is not None and explicit and t.state in ("retrying", "failed"):
            t.next_try = now  # an operator asking again means "now"
            self.version += 1

    def remove(self, address: str) -> Target | None:
        self.version += 1
        return self.targets.pop(address, None)

    def explicit(self) -> list[str]:
        return sorted(a for a, t in self.targets.items() if t.explicit)

    def due(self, now: float) -> list[Target]:
        return [t for t in self.targets.values() if t.state in ("idle", "retrying", "failed") and t.next_try <= now]

    def next_deadline(self) -> float | None:
        times = [t.next_try for t in self.targets.values() if t.state in ("idle", "retrying", "failed")]
        return min(times) if times else None

    def dialing(self, t: Target, conn_id: int) -> None:
        t.state, t.conn_id = "connecting", conn_id
        t.attempts += 1
        self.version += 1

    def connected(self, address: str) -> None:
        t = self.targets.get(address)
        if t:
            t.state, t.attempts, t.info, t.quick = "connected", 0, "", RECONNECT_QUICK
            self.version += 1

    def failed(self, address: str, info: str, now: float, refused: bool = False) -> None:
        t = self.targets.get(address)
        if t is None:
            return
        self.version += 1
        t.conn_id = None
        t.state = "failed" if refused else "retrying"
        t.info = info
        if refused:
            t.quick = 0
        elif t.quick > 0:
            t.quick -= 1
            t.attempts = 0  # the growing backoff starts from BACKOFF_INITIAL once the quick redials are spent
            t.next_try = now + RECONNECT_INTERVAL * self._rng.uniform(0.75, 1.25)
            return
        delay = min(BACKOFF_MAX, BACKOFF_INITIAL * (2 ** min(16, max(0, t.attempts - 1))))
        if refused:
            delay = max(delay, BACKOFF_AFTER_REFUSAL)
        t.next_try = now + delay * self._rng.uniform(0.75, 1.25)
