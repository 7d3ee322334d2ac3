"""Forwarding decisions, pure: where a frame goes given the routes, the MAC table and which direct
peers are on the fast path. The engine does the I/O."""

from __future__ import annotations

from typing import NamedTuple

from ..mesh.routes import RouteTable
from .macs import MacTable


class Out(NamedTuple):
    """Where a frame goes. A tuple, not a dataclass: the engine keys its per-batch groups by it, and a
    tuple hashes in C (a frozen dataclass's __hash__ is Python code, run per frame)."""

    hop: str            # next-hop peer (a direct connection)
    dest: str | None    # final destination peer, None = broadcast
    relay_only: bool = False


def is_multicast(mac: bytes) -> bool:
    return bool(mac[0] & 1)


class Forwarder:
    def __init__(self, ourself: str, routes: RouteTable, fastdp: frozenset[str], macs: MacTable) -> None:
        self.ourself = ourself
        self.routes = routes
        self.fastdp = fastdp
        self.macs = macs

    def from_local(self, dst_mac: bytes, now: float) -> list[Out] | str:
        """A frame from our bridge (via the TAP). Returns outputs, or a drop reason."""
        if not is_multicast(dst_mac):
            peer = self.macs.lookup(dst_mac, now)
            if peer is not None and peer != self.ourself:
                hop = self.routes.unicast.get(peer)
                return [Out(hop, peer)] if hop else "no_route"
        # Broadcast, multicast or unknown unicast: our broadcast tree. Fast-path children already got
        # it from the kernel (VXLAN flood entries); they only need a copy if they must pass it on.
        outs = []
        for child in self.routes.broadcast(self.ourself):
            if child in self.fastdp:
                if self.routes.tree_children(self.ourself, child):
                    outs.append(Out(child, None, relay_only=True))
            else:
                outs.append(Out(child, None))
        return outs

    def from_sleeve(self, origin: str, dest: str | None, relay_only: bool) -> tuple[bool, list[Out]] | str:
        """A datagram received from a peer: (inject into our bridge?, where to relay) or a drop reason.

        The origin is a claim of the hop that sent it: it must be a peer we have a route to (never
        ourselves), which also bounds the per-origin broadcast trees the route table caches."""
        if origin not in self.routes.unicast:
            return "bad_origin"
        if dest == self.ourself:
            return True, []
        if dest is None:
            outs = [Out(c, None) for c in self.routes.tree_children(origin, self.ourself)]
            return (not relay_only), outs
        hop = self.routes.unicast.get(dest)
        return (False, [Out(hop, dest)]) if hop else "no_route"
