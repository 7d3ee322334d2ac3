"""Routes computed from the topology: unicast next hops and per-source broadcast trees.

Pure functions over the symmetric adjacency, deterministic (neighbours sorted by name) so every peer
computes the same broadcast tree for a given source and a broadcast reaches each peer exactly once.

Everything is linear in the size of the topology: unicast routes come from one BFS that carries the
first hop along; a broadcast tree is one BFS per source, computed on first use, and only the parts this
peer needs are kept (its own children per source, and the full tree of its own broadcasts), so a big
topology costs O(peers) memory per source, never O(peers) per source per peer.
"""

from __future__ import annotations

from collections import OrderedDict, deque

REPORT_BROADCAST_MAX = 100  # sources listed in a report (each costs one BFS)
_PARENTS_CACHE = 4          # whole trees kept for tree_children() of other nodes


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
    hop: dict[str, str] = {}
    seen = {ourself}
    q = deque([ourself])
    while q:
        u = q.popleft()
        for v in adj.get(u, ()):
            if v not in seen:
                seen.add(v)
                hop[v] = v if u == ourself else hop[u]
                q.append(v)
    return hop


def _children(adj: dict[str, list[str]], parent: dict[str, str | None], node: str) -> list[str]:
    # A child of `node` is one of its neighbours (adjacency lists are sorted, so is the result).
    if node not in parent:
        return []
    return [v for v in adj.get(node, ()) if parent.get(v) == node and v != node]


def broadcast_next_hops(adj: dict[str, list[str]], source: str, ourself: str) -> list[str]:
    """Our children in the source's BFS tree: where we forward a broadcast that `source` sent."""
    return sorted(_children(adj, bfs_parents(adj, source), ourself))


class RouteTable:
    """Routes for one topology snapshot; broadcast trees are computed on first use and cached."""

    def __init__(self, adj: dict[str, list[str]], ourself: str) -> None:
        self.adj = adj
        self.ourself = ourself
        self.unicast = unicast_routes(adj, ourself)
        self._bcast: dict[str, list[str]] = {}   # source -> our children in its tree
        self._parents: OrderedDict[str, dict[str, str | None]] = OrderedDict()  # a few whole trees

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

    def cached(self, source: str) -> bool:
        """Whether broadcast(source) is free (already computed)."""
        return source in self._bcast

    def tree_children(self, source: str, node: str) -> list[str]:
        """Where `node` forwards a broadcast from `source` (every peer computes the same trees)."""
        if node == self.ourself and source in self._bcast:
            return self._bcast[source]
        parent = self._parents.get(source)
        if parent is None:
            parent = bfs_parents(self.adj, source)
            # Our own tree is kept (the data path asks about our children's children); others briefly.
            self._parents[source] = parent
            while len(self._parents) > _PARENTS_CACHE:
                oldest = next(k for k in self._parents if k != self.ourself)
                del self._parents[oldest]
        else:
            self._parents.move_to_end(source)
        return sorted(_children(self.adj, parent, node))

    def to_report(self) -> dict:
        sources = sorted(self.reachable())
        report: dict = {"unicast": [{"dest": d, "via": h} for d, h in sorted(self.unicast.items())],
                        "broadcast": [{"source": s, "via": self.broadcast(s)}
                                      for s in sources[:REPORT_BROADCAST_MAX]]}
        if len(sources) > REPORT_BROADCAST_MAX:
            report["broadcast_truncated"] = len(sources) - REPORT_BROADCAST_MAX
        return report
