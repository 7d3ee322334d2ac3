"""The router's health subsystem: the tracker (this router's own measurements) and the summary store (every
router's links, gossiped on the "health" channel). Sans I/O like its parts: the dispatcher hands it every event
(`on_event`), the ticker calls `tick`, which returns the gossip send (a delta) for our own summary when it changed
significantly.
"""

from __future__ import annotations

import statistics

from ..mesh.events import PeersChanged
from ..mesh.gossip import Gossiper, GossipSend
from ..mesh.grid import due_after
from .summary import CHANNEL, Link, SummaryStore, encode
from .tracker import HealthTracker

PUBLISH_INTERVAL = 1.0     # our links' states are checked this often; a significant change leaves at once (a delta)
FIGURES_INTERVAL = 10.0    # RTT/loss figures are recomputed (medians over the window) only this often; they
                           # travel with the channel's anti-entropy rounds, never on their own
ANTI_ENTROPY = 5.0         # seconds between the channel's digest rounds (jittered by the gossip layer)


class HealthService:
    def __init__(self, tracker: HealthTracker, store: SummaryStore, nickname: str) -> None:
        self.tracker = tracker
        self.store = store
        self.nickname = nickname
        self._next_publish = 0.0
        self._next_figures = 0.0

    def attach(self, gossip: Gossiper) -> None:
        # The handle answers a neighbour's anti-entropy digest with what it lacks (to it only).
        self.store.send = gossip.register(CHANNEL, self.store, interval=ANTI_ENTROPY)

    def on_event(self, ev: object, now: float) -> None:
        self.tracker.on_event(ev, now)
        if isinstance(ev, PeersChanged):
            self.store.peers_changed(ev.known)

    def links(self, now: float, figures: bool = True) -> list[Link]:
        """Our links for the summary: connected peers, and those that broke (or never came up) recently.
        Without `figures`, a link whose state did not change keeps the figures of our last summary (no
        medians computed): the per-second check costs a loss sum per peer, not a sort."""
        out = []
        t = self.tracker
        ours = self.store.entries.get(self.store.ourname)
        prev = {lk.peer: lk for lk in ours.links} if ours is not None and not figures else {}
        for p in t.peers.values():
            if p.conn_id is not None:
                loss = t.loss(p, now)
                healthy = not t.problems(p, now, loss)
                q = prev.get(p.name)
                if q is not None and (q.state, q.datapath, q.encrypted, q.healthy) == \
                        ("connected", p.datapath, p.encrypted, healthy):
                    out.append(q)
                    continue
                med = statistics.median(p.rtts) if p.rtts else None
                out.append(Link(p.name, "connected", p.datapath, p.encrypted,
                                round(med * 1000) if med is not None else None,
                                round(loss * 1000) if loss is not None else None, healthy))
            elif t.link_broken(p, now):
                out.append(Link(p.name, "broken", "none", False, None, None, False))
        return out

    def next_deadline(self) -> float:
        """When `tick` next has work: the router's ticker sleeps until then."""
        return self._next_publish

    def tick(self, now: float, containers: int) -> list[GossipSend]:
        if now < self._next_publish:
            return []
        self._next_publish = due_after(now, PUBLISH_INTERVAL)
        figures = now >= self._next_figures
        if figures:
            self._next_figures = now + FIGURES_INTERVAL
        change = self.store.publish(self.nickname, containers, self.links(now, figures), now)
        if change is None:
            return []
        body = encode([change])
        return [GossipSend(CHANNEL, body)] if body else []

    def report(self, now: float, nicknames: dict[str, str]) -> dict:
        """What `weave report` carries under "health": our peers' health and every router's summary."""
        return {"peers": self.tracker.report(now, nicknames),
                "mesh": {n: {**s.wire(), "age_s": round(now - s.received, 1)}
                         for n, s in sorted(self.store.entries.items())},
                "refused": dict(self.store.refused), "delta_gaps": self.store.gaps,
                "untracked_peers": self.tracker.refused_peers,
                "unattributed_failures": dict(self.tracker.unattributed_failures)}
