"""The whole mesh as one picture's data, built from a router's report: nodes (routers) and links, each link
merged from what both ends said in their health summaries (the worse view wins), and the topology's own
connections for routers that sent no summary (an older version). Pure: used by the CLI and the live page."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Node:
    name: str
    nickname: str = ""
    address: str = ""
    containers: int | None = None
    ours: bool = False
    summary_age_s: float | None = None


@dataclass
class Edge:
    a: str
    b: str
    state: str = "ok"                 # ok | unhealthy | broken
    datapath: str = "unknown"         # fastdp | sleeve | none | unknown
    encrypted: bool | None = None
    rtt_ms: int | None = None
    loss_permille: int | None = None
    reported_by: list[str] = field(default_factory=list)


@dataclass
class MeshView:
    ourname: str
    nodes: dict[str, Node]
    edges: list[Edge]

    def unhealthy(self) -> list[Edge]:
        return [e for e in self.edges if e.state != "ok"]


_RANK = {"ok": 0, "unhealthy": 1, "broken": 2}
_DP_RANK = {"fastdp": 0, "sleeve": 1, "none": 2, "unknown": -1}


def _host(address: str) -> str:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    return host.strip("[]")


def build(report: dict) -> MeshView:
    r = report["router"]
    me = r["name"]
    nodes: dict[str, Node] = {me: Node(me, r.get("nickname", ""), ours=True,
                                       containers=len(r.get("containers") or []))}

    def node(name: str, nick: str = "") -> Node:
        n = nodes.get(name)
        if n is None:
            n = nodes[name] = Node(name)
        if nick and not n.nickname:
            n.nickname = nick
        return n

    edges: dict[frozenset, Edge] = {}
    for p in r.get("peers") or []:   # the topology (reachable routers) and their established connections
        node(p["name"], p.get("nickname", ""))
        for c in p.get("connections") or []:
            peer = node(c["name"], c.get("nickname", ""))
            if not peer.address and c.get("address"):
                peer.address = _host(c["address"])
            if c.get("established"):
                key = frozenset((p["name"], c["name"]))
                if len(key) == 2 and key not in edges:
                    edges[key] = Edge(*sorted(key))
    health = r.get("health") or {}
    for origin, s in (health.get("mesh") or {}).items():
        n = node(origin, s.get("k", ""))
        n.containers = s.get("c") if not n.ours else n.containers
        n.summary_age_s = s.get("age_s")
        n.nickname = s.get("k") or n.nickname
        for peer, state, dp, enc, rtt, loss, healthy in s.get("l") or []:
            node(peer)
            key = frozenset((origin, peer))
            if len(key) != 2:
                continue
            e = edges.get(key)
            if e is None:
                e = edges[key] = Edge(*sorted(key))
            said = "broken" if state == "broken" else "ok" if healthy else "unhealthy"
            first = not e.reported_by
            e.reported_by.append(origin)
            if first or _RANK[said] > _RANK[e.state]:
                e.state = said
            if state == "connected" and (first or _DP_RANK.get(dp, 2) > _DP_RANK.get(e.datapath, -1)):
                e.datapath = dp
            if state == "connected":
                e.encrypted = enc if e.encrypted is None else (e.encrypted and enc)
                if rtt is not None:
                    e.rtt_ms = rtt if e.rtt_ms is None else max(e.rtt_ms, rtt)
                if loss is not None:
                    e.loss_permille = loss if e.loss_permille is None else max(e.loss_permille, loss)
            if state == "broken":
                e.datapath = "none"
    for hp in health.get("peers") or []:   # our own view of each peer's address (as connected)
        n = nodes.get(hp["name"])
        if n is not None and hp.get("address"):
            n.address = _host(hp["address"])
    return MeshView(me, nodes, sorted(edges.values(), key=lambda e: (e.a, e.b)))
