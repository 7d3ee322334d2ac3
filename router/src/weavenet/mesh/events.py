"""What the mesh tells its users happened: returned, in order, among the actions of every entry point.

Users (the data plane, IPAM, DNS, the gossip layer) learn about connections, peers and messages from
these frozen snapshots only; none reads the mesh's connection objects or polls its tables. Replies go
back through the mesh's methods (``send_app``, ``send_datapath``), called by whoever dispatches the
events after the mesh returned, never from inside the mesh's own event processing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .routes import RouteTable

SLEEVE_KEYS = "sleeve"   # the purpose the data plane's per-connection keys are derived for
DUPLICATE = "duplicate connection"   # ConnectionDown's reason when one of two connections to a peer is dropped


@dataclass(frozen=True)
class ConnectionUp:
    """A connection finished its handshake (not yet confirmed by a heartbeat echo)."""
    peer: str
    conn_id: int
    remote_ip: str                               # as observed (inbound) or dialled (outbound)
    remote_port: int                             # the peer's listen port (the sleeve's UDP port)
    outbound: bool
    features: Mapping[str, str]                  # the peer's validated handshake features (a copy)
    session_keys: tuple[bytes, bytes] | None     # (send, receive) sleeve keys; None without a password


@dataclass(frozen=True)
class ConnectionDown:
    """A connection that was up (a ConnectionUp was returned for it) ended. `link_failed`: the kernel gave up
    on the link (nothing acknowledged: host gone, link cut), not a close by either router."""
    peer: str
    conn_id: int
    reason: str
    link_failed: bool = False


@dataclass(frozen=True)
class PeersChanged:
    """After a route recomputation or topology clean-up that changed any of these sets.
    `reachable`: peers other than us with a route; `neighbours`: directly connected and routable (a
    message sent to them is not dropped); `known`: every peer in the topology but us."""
    reachable: frozenset[str]
    neighbours: frozenset[str]
    known: frozenset[str]


@dataclass(frozen=True)
class RoutesChanged:
    """A new route table (the mesh never changes a table once returned: each is a snapshot)."""
    routes: RouteTable


@dataclass(frozen=True)
class AppMessage:
    """An application-channel message for us. `src` is authenticated by the mesh (a neighbour's own
    message came from it; a routed one from a peer in the topology); the payload is hostile.
    `conn_id`: the connection it arrived on (0: sent by ourselves), so a bad payload can cost it."""
    channel: str
    src: str
    payload: bytes
    conn_id: int = 0


@dataclass(frozen=True)
class DatapathMessage:
    """The data plane's per-connection control message from a directly connected peer (hostile bytes)."""
    peer: str
    body: bytes


@dataclass(frozen=True)
class Heartbeat:
    """A heartbeat arrived on a live connection (for health: `rtt` the round trip in seconds when it echoed one
    of ours, else None; `quiet` the longest silence on the connection since the previous heartbeat, which gives
    loss: a peer skips heartbeats while its other messages prove it alive. None: the gap between heartbeats)."""
    peer: str
    conn_id: int
    rtt: float | None
    quiet: float | None = None


@dataclass(frozen=True)
class ConnectionFailed:
    """A connection that never came up: dial failed, handshake refused or timed out. `peer`: the remote's
    name when the handshake got that far, else ""; `address`: the dialled target or the observed source."""
    address: str
    reason: str
    outbound: bool
    peer: str = ""


Event = (ConnectionUp | ConnectionDown | PeersChanged | RoutesChanged | AppMessage | DatapathMessage | Heartbeat
         | ConnectionFailed)
EVENT_TYPES = (ConnectionUp, ConnectionDown, PeersChanged, RoutesChanged, AppMessage, DatapathMessage, Heartbeat,
               ConnectionFailed)
