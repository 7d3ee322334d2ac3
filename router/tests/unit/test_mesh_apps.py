"""Application channels over the sans-I/O mesh: neighbour gossip and routed unicast, delivered as
AppMessage events; replies go back through send_app after the mesh returned."""

from collections import deque

from weavenet.mesh.events import AppMessage

from .meshsim import SimNet
from .test_mesh_sim import launch_chain


def _chain(n: int):
    net = SimNet()
    meshes = launch_chain(net, n, discovery=False)
    net.until(lambda: all(len(m.routes.unicast) == n - 1 for m in meshes), 20)
    got: dict[str, list] = {m.identity.name: [] for m in meshes}
    for m in meshes:
        def hook(outputs, me=m.identity.name, mesh=m):
            queue, actions = deque(outputs), []
            while queue:
                x = queue.popleft()
                if isinstance(x, AppMessage):
                    got[me].append((x.channel, x.src, x.payload))
                    if x.payload == b"ping":  # answered after the mesh returned, routed back to the source
                        queue.extend(mesh.send_app(x.channel, b"pong", x.src))
                else:
                    actions.append(x)
            return actions
        net.hooks[net.addr_of(m)] = hook
    return net, meshes, got


def test_unicast_is_routed_over_several_hops_and_answered():
    net, meshes, got = _chain(5)
    a, e = meshes[0], meshes[-1]
    net.run(net.addr_of(a), a.send_app("ipam", b"ping", e.identity.name))
    net.advance(0.5)
    assert got[e.identity.name] == [("ipam", a.identity.name, b"ping")]
    assert got[a.identity.name] == [("ipam", e.identity.name, b"pong")]
    for m in meshes[1:-1]:   # relays see nothing
        assert got[m.identity.name] == []


def test_gossip_goes_to_neighbours_only():
    net, meshes, got = _chain(3)
    a, b, c = meshes
    net.run(net.addr_of(b), b.send_app("dns", b"hello"))
    net.advance(0.5)
    assert got[a.identity.name] == [("dns", b.identity.name, b"hello")]
    assert got[c.identity.name] == [("dns", b.identity.name, b"hello")]
    assert got[b.identity.name] == []


def test_unreachable_destination_and_local_delivery():
    net, meshes, got = _chain(2)
    a = meshes[0]
    assert a.send_app("ipam", b"x", "aa:aa:aa:aa:aa:aa") == []
    assert a.send_app("ipam", b"self", a.identity.name) == [AppMessage("ipam", a.identity.name, b"self", 0)]
    net.run(net.addr_of(a), a.send_app("ipam", b"self", a.identity.name))
    assert got[a.identity.name] == [("ipam", a.identity.name, b"self")]
