"""The router's health subsystem: the tracker (this router's own measurements) and the summary store (every
router's links, gossiped on the "health" channel). Sans I/O like its parts: the dispatcher hands it every event
(`on_event`), the ticker calls `tick`, which returns the gossip sends for our own summary when it changed.
"""

from __future__ import annotations

from ..mesh.events import PeersChanged
from ..mesh.gossip import Gossiper, GossipSend
from .summary import CHANNEL, Link, SummaryStore, encode
from .tracker import HealthTracker

PUBLISH_INTERVAL = 1.0     # our summary is rebuilt this often; a state change then leaves at once, new
                           # RTT/loss figures only with the channel's anti-entropy rounds
ANTI_ENTROPY = 5.0         # seconds between the channel's full-state rounds (jittered by the gossip layer)


class HealthService:
    def __init__(self, tracker: HealthTracker, store: SummaryStore, nickname: str) -> None:
        self.tracker = tracker
        self.store = store
        self.nickname = nickname
        self._next_publish = 0.0

    def attach(self, gossip: Gossiper) -> None:
        gossip.register(CHANNEL, self.store, interval=ANTI_ENTROPY)

    def on_event(self, ev: object, now: float) -> None:
        self.tracker.on_event(ev, now)
        if isinstance(ev, PeersChanged):
            self.store.peers_changed(ev.known)

    def links(self, now: float) -> list[Link]:
        """Our links for the summary: connected peers, and those that broke (or never came up) recently."""
        out = []
        t = self.tracker
        for p in t.peers.values():
            if p.conn_id is not None:
                med, _, loss, problems = t.figures(p, now)
                out.append(Link(p.name, "connected", p.datapath, p.encrypted,
                                round(med * 1000) if med is not None else None,
                                round(loss * 1000) if loss is not None else None, not problems))
            elif t.link_broken(p, now):
                out.append(Link(p.name, "broken", "none", False, None, None, False))
        return out

    def tick(self, now: float, containers: int) -> list[GossipSend]:
        if now < self._next_publish:
            return []
        self._next_publish = now + PUBLISH_INTERVAL
        new = self.store.publish(self.nickname, containers, self.links(now), now)
        if new is None:
            return []
        body = encode([new])
        return [GossipSend(CHANNEL, body)] if body else []

    def report(self, now: float, nicknames: dict[str, str]) -> dict:
        """What `weave report` carries under "health": our peers' health and every router's summary."""
        return {"peers": self.tracker.report(now, nicknames),
                "mesh": {n: {**s.wire(), "age_s": round(now - s.received, 1)}
                         for n, s in sorted(self.store.entries.items())},
                "refused": dict(self.store.refused), "untracked_peers": self.tracker.refused_peers,
                "unattributed_failures": dict(self.tracker.unattributed_failures)}
