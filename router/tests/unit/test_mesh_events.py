"""The events the sans-I/O mesh returns among its actions, for each transition, on real cores in memory."""

from __future__ import annotations

from weavenet.mesh.channel import MsgType
from weavenet.mesh.core import Close, ConnState
from weavenet.mesh.events import (
    AppMessage,
    ConnectionDown,
    ConnectionUp,
    DatapathMessage,
    PeersChanged,
    RoutesChanged,
)

from .meshsim import SimNet, full_mesh


def recorded(net: SimNet, *meshes):
    for m in meshes:
        net.recording.add(net.addr_of(m))
    return lambda m, kind=object: [e for e in net.events.get(net.addr_of(m), []) if isinstance(e, kind)]


def pair(password: str | None = None):
    net = SimNet()
    a, b = net.add(1, password=password), net.add(2, password=password)
    events = recorded(net, a, b)
    net.run(net.addr_of(b), b.connect([net.addr_of(a)], net.now))
    net.until(lambda: full_mesh(net), 10)
    return net, a, b, events


def test_connection_up_then_routes_then_peers_in_order():
    net, a, b, events = pair()
    (up,) = events(a, ConnectionUp)
    (conn,) = a.live_connections()
    assert up == ConnectionUp(b.identity.name, conn.id, "192.0.2.2", 6783, False, {}, None)
    assert events(b, ConnectionUp)[0].outbound is True
    kinds = [type(e) for e in events(a)]
    assert kinds.index(ConnectionUp) < kinds.index(RoutesChanged) < kinds.index(PeersChanged)
    peers = events(a, PeersChanged)[-1]
    assert peers == PeersChanged(frozenset({b.identity.name}), frozenset({b.identity.name}),
                                 frozenset({b.identity.name}))
    assert events(a, RoutesChanged)[-1].routes is a.routes   # the table itself: never changed afterwards


def test_encrypted_connection_carries_matching_sleeve_keys():
    _, a, b, events = pair(password="secret")
    (ua,), (ub,) = events(a, ConnectionUp), events(b, ConnectionUp)
    assert ua.session_keys is not None and ub.session_keys is not None
    assert ua.session_keys[0] == ub.session_keys[1] and ua.session_keys[1] == ub.session_keys[0]


def test_connection_down_when_the_peer_goes_and_peers_changed_after_the_next_tick():
    net, a, b, events = pair()
    (up,) = events(a, ConnectionUp)
    net.kill(b)
    assert events(a, ConnectionDown) == [ConnectionDown(b.identity.name, up.conn_id, "EOF")]
    net.step()
    assert events(a, PeersChanged)[-1].neighbours == frozenset()
    assert events(a, PeersChanged)[-1].known == frozenset({b.identity.name})   # still in the topology
    net.advance(a.config.unreachable_gc_after + 1)
    assert events(a, PeersChanged)[-1] == PeersChanged(frozenset(), frozenset(), frozenset())


def test_a_cut_link_ends_through_the_kernels_timeout_well_before_the_silence_limit():
    net, a, b, events = pair()
    net.cut.add(frozenset((net.addr_of(a), net.addr_of(b))))
    cut_at = net.now
    net.until(lambda: events(a, ConnectionDown), 5)
    (down,) = events(a, ConnectionDown)
    assert down.reason == "connection timed out"
    # the next heartbeat, unacknowledged for the user timeout: the kernel's limit
    cfg = a.config
    assert net.now - cut_at <= cfg.heartbeat_interval + cfg.tcp_user_timeout + 0.1 < 3.0


def test_connection_down_on_heartbeat_timeout_and_on_a_protocol_error():
    net, a, b, events = pair()
    net.hung.add(net.addr_of(b))          # b's router stops; its kernel still acknowledges what a sends
    net.advance(a.config.heartbeat_timeout + 1)
    assert [e.reason.startswith("no heartbeat") for e in events(a, ConnectionDown)] == [True]
    net.hung.clear()
    net.run(net.addr_of(b), b.tick(net.now))
    for t in b.connmaker.targets.values():
        t.next_try = net.now
    net.until(lambda: full_mesh(net), 20)
    (ac,) = a.live_connections()
    (bc,) = b.live_connections()
    out = a.data_received(ac.id, bc.channel.encode(MsgType.GOSSIP, b"not json"), net.now)
    assert isinstance(out[-1], ConnectionDown) and out[-1].conn_id == ac.id   # after its Close
    assert any(isinstance(x, Close) for x in out)


def test_messages_become_events_for_their_users():
    net, a, b, events = pair()
    (ac,) = a.live_connections()
    net.run(net.addr_of(b), b.send_datapath(a.identity.name, b"fastdp status"))
    net.run(net.addr_of(b), b.send_app("dns", b"news"))
    net.run(net.addr_of(b), b.send_app("ipam", b"to you", a.identity.name))
    net.step()
    assert events(a, DatapathMessage) == [DatapathMessage(b.identity.name, b"fastdp status")]
    assert events(a, AppMessage) == [AppMessage("dns", b.identity.name, b"news", ac.id),
                                     AppMessage("ipam", b.identity.name, b"to you", ac.id)]
    # Nothing is called back: the mesh has no handler to call.
    assert not hasattr(a, "on_app_message") and not hasattr(a, "on_datapath_message")


def test_shutdown_says_every_connection_went_down():
    _, a, b, _ = pair()
    (up,) = [c.id for c in a.live_connections()]
    out = a.shutdown()
    assert [x for x in out if isinstance(x, ConnectionDown)] == [ConnectionDown(b.identity.name, up,
                                                                                "router shutting down")]


def test_every_down_follows_its_up_once_through_churn():
    """Duplicates, restarts, kills: a user counting ConnectionUp/Down always agrees with the mesh."""
    net = SimNet(5)
    meshes = [net.add(i) for i in range(1, 6)]
    events = recorded(net, *meshes)
    for m in meshes[1:]:   # everyone dials everyone at once: duplicate connections get resolved
        net.run(net.addr_of(m), m.connect([net.addr_of(x) for x in meshes if x is not m], net.now))
    net.until(lambda: full_mesh(net), 30)
    net.kill(meshes[2])
    net.advance(3)
    for m in meshes:
        if net.addr_of(m) in net.down:
            continue
        ups = [e.conn_id for e in events(m, ConnectionUp)]
        downs = [e.conn_id for e in events(m, ConnectionDown)]
        assert len(set(ups)) == len(ups) and len(set(downs)) == len(downs) and set(downs) <= set(ups)
        assert set(ups) - set(downs) == {c.id for c in m.live_connections()}


def test_connection_states_are_an_enum_and_reports_keep_their_strings():
    net, a, _, _ = pair()
    (c,) = a.live_connections()
    assert c.state is ConnState.ESTABLISHED
    assert [x["state"] for x in a.report(net.now)["connections"]] == ["established"]


class FakeEngine:
    """The sleeve engine's interface to the data plane, without threads or sockets: what it was given."""

    def __init__(self) -> None:
        self.views: list = []
        self.drops: dict = {}

    def publish(self, view) -> None:
        self.views.append(view)

    def dead_threads(self) -> dict:
        return {}


class FakeSocket:
    def send(self, data: bytes) -> int:
        return len(data)

    def recvmsg(self, *args) -> tuple:
        raise BlockingIOError


def test_the_data_plane_follows_connection_events_without_reading_the_mesh():
    from weavenet.mesh.routes import RouteTable
    from weavenet.weaver.dataplane import Dataplane, DataplaneConfig

    from .test_datapath_fdbsync import Recorder

    us, b, c = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
    mac_b, mac_c = "02:aa:00:00:00:02", "02:aa:00:00:00:03"
    dp = Dataplane(DataplaneConfig(), us)
    dp.engine, dp._nl, dp._hb_sock = FakeEngine(), (nl := Recorder()), FakeSocket()
    dp.vxlan_mac, dp._filter_peers = "02:aa:00:00:00:01", frozenset()
    try:
        dp.on_connection_up(ConnectionUp(b, 1, "::ffff:192.0.2.2", 6783, True, {"fastdp": mac_b}, None))
        dp.on_connection_up(ConnectionUp(c, 2, "192.0.2.3", 6790, False, {"fastdp": mac_c}, (b"t" * 32, b"r" * 32)))
        dp.sync(10.0)
        view = dp.engine.views[-1]
        assert (view.links[b].addr, view.links[b].tx_key) == (("192.0.2.2", 6783), None)
        assert (view.links[c].addr, view.links[c].tx_key, view.links[c].rx_key) == \
            (("192.0.2.3", 6790), b"t" * 32, b"r" * 32)
        # An encrypted connection never gets the (unauthenticated) fast path; the other is a candidate.
        assert {n: p.ip for n, p in dp.decider.paths.items()} == {b: "192.0.2.2"}
        assert ("set_peers", ({"192.0.2.2", "192.0.2.3"},)) in nl.take()
        n_views = len(dp.engine.views)
        dp.sync(10.1)
        assert len(dp.engine.views) == n_views   # nothing changed: nothing republished
        routes = RouteTable({us: [c], c: [us]}, us)
        dp.on_routes(routes)
        dp.on_connection_down(ConnectionDown(b, 1, "EOF"))
        dp.sync(10.2)
        assert dp.engine.views[-1].routes is routes and set(dp.engine.views[-1].links) == {c}
        assert dp.decider.paths == {}   # never active: flushed at once, no grace period
        calls = nl.take()
        assert ("fdb_flush_dst", ("vxlan-6784", "192.0.2.2", frozenset())) in calls
        assert ("set_peers", ({"192.0.2.3"},)) in calls
    finally:
        dp._netlink.shutdown(wait=False)
