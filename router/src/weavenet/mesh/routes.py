"""Routes computed from the topology: unicast next hops and per-source broadcast trees.

Pure functions over the symmetric adjacency, deterministic (neighbours sorted by name) so every peer
computes the same broadcast tree for a given source and a broadcast reaches each peer exactly once.
"""

from __future__ import annotations

from collections import deque


def bfs_parents(adj: dict[str, list[str]], source: str) -> dict[str, str | None]:
    parent: dict[str, str | None] = {source: None}
    q = deque([source])
    while q:
        u = q.popleft()
        for v in adj.get(u, ()):
            if v not in parent:
                parent[v] = u
                q.append(v)
    return parent


def unicast_routes(adj: dict[str, list[str]], ourself: str) -> dict[str, str]:
    """destination -> next hop, for every peer reachable from us (shortest path in hops)."""
    parent = bfs_parents(adj, ourself)
    routes: dict[str, str] = {}
    for dest in parent:
        if dest == ourself:
            continue
        hop = dest
        while parent[hop] != ourself:
            hop = parent[hop]  # type: ignore[assignment]
        routes[dest] = hop
    return routes


def broadcast_next_hops(adj: dict[str, list[str]], source: str, ourself: str) -> list[str]:
    """Our children in the source's BFS tree: where we forward a broadcast that `source` sent."""
    parent = bfs_parents(adj, source)
    if ourself not in parent:
        return []
    return sorted(n for n, p in parent.items() if p == ourself)


class RouteTable:
    """Routes for one topology snapshot; broadcast trees are computed on first use and cached."""

    def __init__(self, adj: dict[str, list[str]], ourself: str) -> None:
        self.adj = adj
        self.ourself = ourself
        self.unicast = unicast_routes(adj, ourself)
        self._bcast: dict[str, list[str]] = {}
        self._trees: dict[str, dict[str, str | None]] = {}

    def reachable(self) -> set[str]:
        return set(self.unicast) | {self.ourself}

    def neighbours(self) -> set[str]:
        """Directly connected peers that are already routable (so a message sent to them is not dropped)."""
        return {d for d, hop in self.unicast.items() if d == hop}

    def broadcast(self, source: str) -> list[str]:
        hops = self._bcast.get(source)
        if hops is None:
            hops = self._bcast[source] = self.tree_children(source, self.ourself)
        return hops

    def tree_children(self, source: str, node: str) -> list[str]:
        """Where `node` forwards a broadcast from `source` (every peer computes the same trees)."""
        parent = self._trees.get(source)
        if parent is None:
            parent = self._trees[source] = bfs_parents(self.adj, source)
        if node not in parent:
            return []
        return sorted(n for n, p in parent.items() if p == node)

    def to_report(self) -> dict:
        return {"unicast": [{"dest": d, "via": h} for d, h in sorted(self.unicast.items())],
                "broadcast": [{"source": s, "via": self.broadcast(s)} for s in sorted(self.reachable())]}
