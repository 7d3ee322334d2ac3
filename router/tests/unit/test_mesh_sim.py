"""Whole-mesh behaviour of the sans-I/O core, many peers in one process."""

import pytest

from weavenet.mesh.connmaker import DISCOVERED_DEFER

from .meshsim import SimNet, full_mesh


def launch_chain(net: SimNet, n: int, **kw):
    meshes = []
    for i in range(1, n + 1):
        m = net.add(i, **kw)
        if meshes:
            net.run(net.addr_of(m), m.connect([net.addr_of(meshes[-1])], net.now))
        meshes.append(m)
        net.step()
    return meshes


@pytest.mark.parametrize("n", [5, 50])
def test_chain_launch_converges_to_full_mesh(n):
    net = SimNet()
    launch_chain(net, n)
    took = net.until(lambda: full_mesh(net), timeout=60)
    assert took < 30
    for m in net.meshes.values():
        assert len(m.routes.unicast) == n - 1
        # Full mesh: every destination is its own next hop.
        assert all(d == h for d, h in m.routes.unicast.items())


def test_peers_that_discover_each_other_dial_once_the_lower_name_first():
    """A join into a full mesh costs one handshake per pair: of two peers that learn of each other, the one
    with the lower name dials at once, the other defers its dial (DISCOVERED_DEFER)."""
    net = SimNet()
    low, mid, high = net.add(1), net.add(2), net.add(3)
    net.run(net.addr_of(mid), mid.connect([net.addr_of(low), net.addr_of(high)], net.now))
    seen: dict[str, float] = {}

    def targets_made() -> bool:
        for m, other in ((low, high), (high, low)):
            t = m.connmaker.targets.get(net.addr_of(other))
            if t is not None and m.identity.name not in seen:
                seen[m.identity.name] = t.next_try - net.now
        return len(seen) == 2 or high.routes.unicast.get(low.identity.name) == low.identity.name
    net.until(targets_made, timeout=10)
    assert seen[low.identity.name] <= 0.05
    assert seen.get(high.identity.name, DISCOVERED_DEFER) >= 0.75 * DISCOVERED_DEFER - 0.1
    net.until(lambda: full_mesh(net), timeout=10)
    # A connection we had is redialled at once by both ends, whichever name is higher (a peer restarting).
    pair = frozenset((net.addr_of(low), net.addr_of(high)))
    net.cut.add(pair)
    net.until(lambda: high.routes.unicast.get(low.identity.name) == mid.identity.name, timeout=10)
    net.cut.discard(pair)
    net.until(lambda: net.addr_of(low) in high.connmaker.targets
              or high.routes.unicast.get(low.identity.name) == low.identity.name, timeout=10)
    t = high.connmaker.targets.get(net.addr_of(low))
    assert t is None or t.next_try - net.now < 1.0


def test_a_deferred_dial_still_happens_when_the_lower_name_never_dials():
    """One-way reachability: the lower-named peer does not dial (here: discovery off), so the higher one
    dials by itself once its deferral (DISCOVERED_DEFER, jittered ±25 %) is over, not before."""
    net = SimNet()
    low = net.add(1, discovery=False)
    mid, high = net.add(2), net.add(3)
    net.run(net.addr_of(mid), mid.connect([net.addr_of(low)], net.now))
    net.run(net.addr_of(high), high.connect([net.addr_of(mid)], net.now))

    def direct() -> bool:
        return high.routes.unicast.get(low.identity.name) == low.identity.name
    net.until(lambda: low.identity.name in high.routes.unicast, timeout=10)   # high learnt of low
    took = net.until(direct, timeout=15)
    assert 0.75 * DISCOVERED_DEFER - 0.5 <= took <= 1.25 * DISCOVERED_DEFER + 2


def test_no_discovery_keeps_chain_and_routes_multi_hop():
    net = SimNet()
    a, b, c = launch_chain(net, 3, discovery=False)
    net.until(lambda: len(a.report(net.now)["peers"]) == 3 and len(c.report(net.now)["peers"]) == 3, 10)
    net.advance(2)
    assert a.routes.unicast == {b.identity.name: b.identity.name, c.identity.name: b.identity.name}
    assert sum(1 for x in a.report(net.now)["connections"] if x["state"] == "established") == 1
    # Broadcast from a: a sends to b only, b forwards to c, c forwards to nobody.
    assert a.routes.broadcast(a.identity.name) == [b.identity.name]
    assert b.routes.broadcast(a.identity.name) == [c.identity.name]
    assert c.routes.broadcast(a.identity.name) == []


def test_killed_peer_is_dropped_and_routes_follow():
    net = SimNet()
    meshes = launch_chain(net, 5)
    net.until(lambda: full_mesh(net), 30)
    victim = meshes[2]
    net.kill(victim)
    others = [m for m in meshes if m is not victim]

    def gone():
        return all(victim.identity.name not in {p["name"] for p in m.report(net.now)["peers"]}
                   and victim.identity.name not in m.routes.unicast for m in others)

    # EOF is seen at once; the others' updated entries need one gossip round (rate-limited to 2/s).
    assert net.until(gone, timeout=1.0) <= 0.6
    assert full_mesh(net, 4)


def test_silent_peer_detected_within_three_seconds():
    net = SimNet()
    meshes = launch_chain(net, 3)
    net.until(lambda: full_mesh(net), 30)
    victim = meshes[1]
    net.down.add(net.addr_of(victim))  # no FIN: it just goes silent
    took = net.until(lambda: all(victim.identity.name not in m.routes.unicast
                                 for m in meshes if m is not victim), timeout=10)
    assert took <= 3.0


def test_reroute_when_direct_link_cut():
    net = SimNet()
    a, b, c = launch_chain(net, 3)
    net.until(lambda: full_mesh(net), 30)
    net.cut.add(frozenset((net.addr_of(a), net.addr_of(c))))
    net.until(lambda: a.routes.unicast.get(c.identity.name) == b.identity.name, timeout=3.5)


def test_wrong_password_refused_on_both_sides(caplog):
    net = SimNet()
    a = net.add(1, password="right")
    b = net.add(2, password="wrong")
    net.run(net.addr_of(b), b.connect([net.addr_of(a)], net.now))
    net.advance(1)
    rb = b.report(net.now)
    ra = a.report(net.now)
    assert [c["state"] for c in rb["connections"]] == ["failed"]
    assert "password differs" in rb["connections"][0]["info"]
    assert any(c["state"] == "failed" and "password differs" in c["info"] for c in ra["connections"])
    assert len(ra["peers"]) == 1 and len(rb["peers"]) == 1


def test_encrypted_mesh_converges():
    net = SimNet()
    launch_chain(net, 4, password="s3cret")
    net.until(lambda: full_mesh(net), 30)
    for m in net.meshes.values():
        assert all(c["encrypted"] for c in m.report(net.now)["connections"])


def test_password_mismatch_with_plain_peer():
    net = SimNet()
    a = net.add(1, password="x")
    b = net.add(2)
    net.run(net.addr_of(b), b.connect([net.addr_of(a)], net.now))
    net.advance(1)
    info = b.report(net.now)["connections"][0]["info"]
    assert "encryption mismatch" in info


def test_restarted_peer_replaces_old_incarnation():
    net = SimNet()
    a, b = launch_chain(net, 2)
    net.until(lambda: full_mesh(net), 10)
    old_uid = b.identity.uid
    # b restarts silently (no FIN) with the same name, then reconnects.
    addr_b = net.addr_of(b)
    net.down.add(addr_b)
    net.advance(0.2)
    net.down.discard(addr_b)
    for k in [k for k in net.links if k[0] == addr_b]:
        net.links.pop(k)
    b2 = net.add(2, name=b.identity.name)
    net.run(addr_b, b2.connect([net.addr_of(a)], net.now))
    net.until(lambda: full_mesh(net), 10)
    peers = {p["name"]: p for p in a.report(net.now)["peers"]}
    assert peers[b.identity.name]["uid"] == b2.identity.uid != old_uid


def test_forget_stops_retrying_and_replace():
    net = SimNet()
    a = net.add(1)
    net.run(net.addr_of(a), a.connect(["192.0.2.99", "192.0.2.98:7000"], net.now))
    net.advance(1)
    assert a.report(net.now)["targets"] == ["192.0.2.98:7000", "192.0.2.99:6783"]
    states = {c["address"]: c["state"] for c in a.report(net.now)["connections"]}
    assert states == {"192.0.2.98:7000": "retrying", "192.0.2.99:6783": "retrying"}
    net.run(net.addr_of(a), a.forget(["192.0.2.99"], net.now))
    assert a.report(net.now)["targets"] == ["192.0.2.98:7000"]
    net.run(net.addr_of(a), a.connect(["192.0.2.97"], net.now, replace=True))
    assert a.report(net.now)["targets"] == ["192.0.2.97:6783"]


def test_conn_limit_refuses_extra_inbound():
    net = SimNet()
    hub = net.add(1)
    hub.config.conn_limit = 2
    others = [net.add(i) for i in range(2, 6)]
    for o in others:
        o.config.discovery = False
        net.run(net.addr_of(o), o.connect([net.addr_of(hub)], net.now))
    net.advance(2)
    est = [c for c in hub.report(net.now)["connections"] if c["state"] == "established"]
    assert len(est) == 2
