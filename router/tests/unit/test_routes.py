"""Unicast next hops and per-source broadcast trees over a symmetric adjacency."""

import random
from collections import Counter, deque

import pytest

from weavenet.mesh.routes import RouteTable, bfs_parents, broadcast_next_hops, unicast_routes


def graph(n: int, edges) -> dict[str, list[str]]:
    adj = {f"p{i:02d}": [] for i in range(n)}
    for a, b in edges:
        adj[f"p{a:02d}"].append(f"p{b:02d}")
        adj[f"p{b:02d}"].append(f"p{a:02d}")
    return {k: sorted(set(v)) for k, v in adj.items()}


def line(n):
    return graph(n, [(i, i + 1) for i in range(n - 1)])


def ring(n):
    return graph(n, [(i, (i + 1) % n) for i in range(n)])


def random_connected(rng: random.Random, n: int) -> dict[str, list[str]]:
    edges = [(i, rng.randrange(i)) for i in range(1, n)]  # a random spanning tree...
    edges += [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(0, 2 * n))]  # ...plus extra edges
    adj = graph(n, [(a, b) for a, b in edges if a != b])
    keys = list(adj)
    rng.shuffle(keys)  # dict order must not matter
    return {k: adj[k] for k in keys}


def bfs_dist(adj, src):
    dist, q = {src: 0}, deque([src])
    while q:
        u = q.popleft()
        for v in adj[u]:
            if v not in dist:
                dist[v] = dist[u] + 1
                q.append(v)
    return dist


def check_unicast(adj, src):
    routes = unicast_routes(adj, src)
    dist = bfs_dist(adj, src)
    assert set(routes) == set(dist) - {src}
    for dest, hop in routes.items():
        assert hop in adj[src]
        assert bfs_dist(adj, hop)[dest] == dist[dest] - 1  # the hop is on a shortest path
    return routes


def test_line_routes():
    adj = line(5)
    assert check_unicast(adj, "p00") == {f"p{i:02d}": "p01" for i in range(1, 5)}
    assert check_unicast(adj, "p02") == {"p00": "p01", "p01": "p01", "p03": "p03", "p04": "p03"}


def test_ring_routes():
    adj = ring(6)
    routes = check_unicast(adj, "p00")
    assert routes["p01"] == "p01" and routes["p02"] == "p01"
    assert routes["p05"] == "p05" and routes["p04"] == "p05"
    assert routes["p03"] in ("p01", "p05")


@pytest.mark.parametrize("seed", range(10))
def test_random_graph_routes(seed):
    rng = random.Random(seed)
    adj = random_connected(rng, rng.randint(2, 40))
    for src in adj:
        assert len(check_unicast(adj, src)) == len(adj) - 1


def test_unreachable_and_isolated():
    adj = graph(4, [(0, 1), (2, 3)])
    assert unicast_routes(adj, "p00") == {"p01": "p01"}
    assert unicast_routes({"x": []}, "x") == {}
    assert unicast_routes({}, "x") == {}
    assert broadcast_next_hops(adj, "p00", "p02") == []


def test_bfs_parents():
    assert bfs_parents(line(3), "p00") == {"p00": None, "p01": "p00", "p02": "p01"}


def simulate_broadcast(adj, source):
    received = Counter()
    q = deque([source])
    while q:
        node = q.popleft()
        for nxt in broadcast_next_hops(adj, source, node):
            assert nxt in adj[node]
            received[nxt] += 1
            q.append(nxt)
    return received


@pytest.mark.parametrize("seed", range(8))
def test_broadcast_reaches_every_node_exactly_once(seed):
    rng = random.Random(seed)
    adj = random_connected(rng, rng.randint(10, 50))
    for src in adj:
        received = simulate_broadcast(adj, src)
        assert src not in received
        assert set(received) == set(adj) - {src}
        assert set(received.values()) == {1}


def test_broadcast_on_line_and_ring():
    assert broadcast_next_hops(line(4), "p00", "p00") == ["p01"]
    assert broadcast_next_hops(line(4), "p00", "p03") == []
    assert broadcast_next_hops(line(4), "p01", "p01") == ["p00", "p02"]
    assert broadcast_next_hops(ring(4), "p00", "p00") == ["p01", "p03"]
    # p02 is two hops from p00 either way; the sorted BFS gives it to p01, so p03 forwards nowhere.
    assert broadcast_next_hops(ring(4), "p00", "p01") == ["p02"]
    assert broadcast_next_hops(ring(4), "p00", "p03") == []


def test_route_table_caches_broadcast_trees():
    adj = line(3)
    rt = RouteTable(adj, "p01")
    first = rt.broadcast("p00")
    assert first == ["p02"]
    adj["p01"] = []  # mutate the snapshot behind the table's back
    assert rt.broadcast("p00") is first  # cached: unchanged
    assert rt.broadcast("p02") == []  # first use: computed from the mutated adjacency


def test_route_table_report():
    rt = RouteTable(line(3), "p01")
    assert rt.unicast == {"p00": "p00", "p02": "p02"}
    assert rt.reachable() == {"p00", "p01", "p02"}
    assert rt.to_report() == {
        "unicast": [{"dest": "p00", "via": "p00"}, {"dest": "p02", "via": "p02"}],
        "broadcast": [{"source": "p00", "via": ["p02"]}, {"source": "p01", "via": ["p00", "p02"]},
                      {"source": "p02", "via": ["p00"]}],
    }
    assert RouteTable({"x": []}, "x").to_report() == {"unicast": [], "broadcast": [{"source": "x", "via": []}]}
