"""The router's dispatcher: hands the mesh's events to the subsystems, in order, and feeds their replies
back through the mesh's methods — after the mesh returned, never from inside its event processing.

Everything the router executes goes through `Dispatcher.run`: mesh actions pass through to the adapter,
events go to the data plane, IPAM, DNS and the gossip layer, and the subsystems' requests (GossipSend,
DatapathSend) become mesh sends, whose own events (a message to ourselves) are dispatched in turn.
On the loop only, like the mesh.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..mesh.core import Action, Close, Dial, Mesh, Patience, Send, Throttle
from ..mesh.errors import ProtocolError
from ..mesh.events import (
    AppMessage,
    ConnectionDown,
    ConnectionUp,
    DatapathMessage,
    Heartbeat,
    PeersChanged,
    RoutesChanged,
)
from ..mesh.gossip import Gossiper, GossipSend
from .dataplane import DatapathSend

if TYPE_CHECKING:
    from ..health.service import HealthService
    from .dataplane import Dataplane
    from .dns_service import DnsService
    from .ipam_service import IpamService

log = logging.getLogger("weavenet.weaver")

_ACTIONS = (Send, Close, Dial, Patience)


class Dispatcher:
    def __init__(self, mesh: Mesh, gossip: Gossiper, dataplane: Dataplane | None = None,
                 ipam: IpamService | None = None, dns: DnsService | None = None,
                 health: HealthService | None = None) -> None:
        self.mesh = mesh
        self.gossip = gossip
        self.dataplane = dataplane
        self.ipam = ipam
        self.dns = dns
        self.health = health
        for svc in (ipam, dns, health):
            if svc is not None:
                svc.attach(gossip)   # their channels: new-neighbour sync and anti-entropy are the gossip layer's
        self._throttle = Throttle()

    def run(self, outputs: Iterable[object], now: float) -> list[Action]:
        """Dispatch every event among `outputs` (FIFO, including those that replies cause); return the
        actions for the adapter, in order."""
        queue = deque(outputs)
        actions: list[Action] = []
        while queue:
            x = queue.popleft()
            if isinstance(x, _ACTIONS):
                actions.append(x)
            elif isinstance(x, GossipSend):
                queue.extend(self.mesh.send_app(x.channel, x.payload, x.dest, x.exclude))
            elif isinstance(x, DatapathSend):
                queue.extend(self.mesh.send_datapath(x.peer, x.body))
            else:
                queue.extend(self._event(x, now))
        return actions

    def tick(self, now: float) -> list[Action]:
        """The gossip layer's anti-entropy round (the router's ticker calls it)."""
        return self.run(self.gossip.tick(now), now)

    def _event(self, ev: object, now: float) -> list[object]:
        if self.health is not None and not isinstance(ev, AppMessage | DatapathMessage):
            self._guard("health", now, self.health.on_event, ev, now)   # every other event, the data plane's too
        if isinstance(ev, AppMessage):
            return self._app_message(ev, now)
        out: list[object] = []
        dp, ipam, dns = self.dataplane, self.ipam, self.dns
        if isinstance(ev, Heartbeat):
            if dp is not None and dp.fastdp:
                self._guard("dataplane", now, dp.on_heartbeat, ev.peer)
        elif isinstance(ev, DatapathMessage):
            if dp is not None:
                self._guard("dataplane", now, dp.on_datapath_message, ev.peer, ev.body)
        elif isinstance(ev, ConnectionUp | ConnectionDown):
            up = isinstance(ev, ConnectionUp)
            if dp is not None:
                self._guard("dataplane", now, dp.on_connection_up if up else dp.on_connection_down, ev)
            if ipam is not None:
                self._guard("ipam", now, ipam.connection_changed, ev)
        elif isinstance(ev, RoutesChanged):
            self.gossip.adjacency_changed(ev.routes.adj)
            if dp is not None:
                self._guard("dataplane", now, dp.on_routes, ev.routes)
        elif isinstance(ev, PeersChanged):
            out += self._guard("gossip", now, self.gossip.neighbours_changed, ev.neighbours, now) or []
            if ipam is not None:
                out += self._guard("ipam", now, ipam.peers_changed, ev, now) or []
            if dns is not None:
                self._guard("dns", now, dns.peers_changed, ev)
            if dp is not None:
                self._guard("dataplane", now, dp.on_peers, ev.known)
        return out

    def _app_message(self, ev: AppMessage, now: float) -> list[object]:
        """A channel's message: a ProtocolError out of its merge costs the connection it came on (counted
        against the sender, as the mesh's own errors are); a bug handling it too, logged once a minute."""
        if not self.gossip.handles(ev.channel):
            return []   # a channel of a newer version, or DNS while ours is off
        try:
            return list(self.gossip.message(ev.channel, ev.src, ev.payload, now))
        except ProtocolError as e:
            return list(self.mesh.reject(ev.conn_id, f"{ev.channel}: {e}", now))
        except Exception:  # noqa: BLE001 - a bug in a channel costs this connection, not the router
            held = self._throttle.allow(f"app:{ev.channel}", now)
            if held is not None:
                log.exception("%s message from %s: internal error handling it%s", ev.channel, ev.src,
                              f" ({held} more not logged)" if held else "")
            return list(self.mesh.reject(ev.conn_id, "internal error", now, internal=True))

    def _guard(self, name: str, now: float, fn, *args):
        """One subsystem failing on an event (a bug) must not keep the event from the others."""
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001
            held = self._throttle.allow(name, now)
            if held is not None:
                log.exception("%s failed handling a mesh event%s", name, f" ({held} more not logged)" if held else "")
            return None
