"""An overloaded host is not a dead one: patient kernel limits instead of connection churn (MeshConfig.late_limit)."""

from __future__ import annotations

from weavenet.mesh.core import Mesh, Patience
from weavenet.mesh.events import ConnectionDown

from .meshsim import SimNet, full_mesh


def stall(net: SimNet, m: Mesh) -> None:
    """m's router is not scheduled for longer than its timers may be late (its kernel still answers), less
    than its peers' silence limit."""
    net.hung.add(net.addr_of(m))
    net.advance(m.config.heartbeat_timeout / 2 + 1.0)
    net.hung.clear()


def mesh_of(n: int) -> SimNet:
    net = SimNet()
    meshes = [net.add(i + 1) for i in range(n)]
    for m in meshes[1:]:
        net.run(net.addr_of(m), m.connect([net.addr_of(meshes[0])], net.now))
    net.until(lambda: full_mesh(net), 20)
    return net


def patient(net: SimNet, m: Mesh) -> set[str]:
    """The peers whose connection socket has the patient limits, as the adapter was told."""
    addr = net.addr_of(m)
    return {c.remote.name for c in m.live_connections() if (addr, c.id) in net.patient}


def test_timers_running_late_make_every_connection_patient_for_the_hold_then_usual_again():
    net = mesh_of(3)
    a, b, c = net.meshes.values()
    assert patient(net, a) == set()
    stall(net, a)
    net.step()                              # a's first tick: its timers ran late
    assert patient(net, a) == {b.identity.name, c.identity.name}
    assert a.counters["patience_periods"] == 1
    net.advance(a.config.patience_hold - 2)
    assert patient(net, a) == {b.identity.name, c.identity.name}
    # (its peers' next heartbeats also came late in its eyes, seen a moment later: their hold ends then)
    net.advance(2 + a.config.heartbeat_timeout / 2 + 2.0)
    assert patient(net, a) == set()


def test_a_peer_whose_heartbeats_come_late_gets_patience_from_us_and_only_that_peer():
    net = mesh_of(3)
    a, b, c = net.meshes.values()
    stall(net, b)
    net.advance(0.5)
    assert patient(net, a) == {b.identity.name}      # b was late; c was not
    assert patient(net, b) == {a.identity.name, c.identity.name}   # b's own timers ran late
    assert a.counters["patience_periods"] == 0       # a itself was never late
    net.advance(5)
    assert patient(net, a) == {b.identity.name}      # for the hold, not until the next check


def test_timers_on_time_never_make_anyone_patient():
    net = mesh_of(4)
    net.advance(60)
    for m in net.meshes.values():
        assert patient(net, m) == set() and m.counters["patience_periods"] == 0


def test_a_cut_link_is_still_detected_while_patient_only_later():
    net = mesh_of(2)
    a, b = net.meshes.values()
    net.recording.add(net.addr_of(a))
    stall(net, a)
    net.step()
    assert patient(net, a) == {b.identity.name}
    net.cut.add(frozenset((net.addr_of(a), net.addr_of(b))))
    cut_at = net.now
    net.until(lambda: any(isinstance(e, ConnectionDown) for e in net.events[net.addr_of(a)]), 10)
    cfg = a.config
    took = net.now - cut_at
    assert cfg.heartbeat_interval + cfg.tcp_user_timeout < took
    assert took <= cfg.heartbeat_interval + cfg.tcp_user_timeout_patient + 0.1


def test_patience_is_told_only_on_change():
    net = mesh_of(2)
    a, _b = net.meshes.values()
    stall(net, a)
    out = a.tick(net.now + 0.01)
    assert [x.patient for x in out if isinstance(x, Patience)] == [True]
    net.run(net.addr_of(a), out)
    again = a.tick(net.now + 2.5)
    assert not [x for x in again if isinstance(x, Patience)]
    net.run(net.addr_of(a), again)
