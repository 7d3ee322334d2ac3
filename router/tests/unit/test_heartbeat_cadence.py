"""Heartbeat cadence (issue #11, cost per peer): one heartbeat each way per interval, whatever other traffic the
connection carries (the fast path reads them as the peer's proof of life); the health tracker counts a
connection's silence, not the gap between heartbeats, so a peer that heartbeats less often is not loss."""

from __future__ import annotations

from weavenet.mesh.events import Heartbeat

from .meshsim import SimNet, full_mesh
from .test_health import HB, B, row, tracker, up
from .test_mesh_sim import launch_chain


def pair_with_traffic() -> tuple[SimNet, object, object, list]:
    net = SimNet()
    a, b = launch_chain(net, 2)
    net.until(lambda: full_mesh(net), 10)
    net.advance(2)
    got: list = []   # b's outputs: its Heartbeat events
    net.hooks[net.addr_of(b)] = lambda acts: (got.extend(acts), acts)[1]
    return net, a, b, got


def test_heartbeats_keep_their_cadence_while_other_messages_flow():
    """No heartbeat is left out for other traffic: the fast path takes them as the peer's proof of life."""
    net, a, b, got = pair_with_traffic()
    sent_at: list[float] = []
    orig = a._heartbeat

    def hb(conn, now):
        sent_at.append(now)
        return orig(conn, now)
    a._heartbeat = hb
    for _ in range(100):   # 10 s with an application message from a every 0.1 s
        net.run(net.addr_of(a), a.send_app("test", b"x"))
        net.step(0.1)
    interval = a.config.heartbeat_interval
    assert len(sent_at) >= int(10 / (interval + 0.1))
    assert max(t2 - t1 for t1, t2 in zip(sent_at, sent_at[1:], strict=False)) <= interval + 0.11
    beats = [e for e in got if isinstance(e, Heartbeat)]
    assert beats and all(e.quiet is not None and e.quiet <= 0.11 for e in beats[1:])   # the silence: one step
    assert len(b.live_connections()) == 1 and len(a.live_connections()) == 1


def test_an_idle_connection_sends_every_heartbeat():
    net, a, b, got = pair_with_traffic()
    net.advance(10)    # nothing but heartbeats and the periodic summary
    interval = a.config.heartbeat_interval
    beats = [e for e in got if isinstance(e, Heartbeat)]
    assert len(beats) >= int(10 / (interval + 0.05))
    assert max(e.quiet for e in beats[1:]) <= interval + 0.06


def test_tracker_counts_the_silence_not_the_gap_between_heartbeats():
    t = tracker()
    t.on_event(up(fastdp=False), 0.0)
    # heartbeats every two intervals, other messages in between (quiet: one interval at most): no loss
    for i in range(1, 11):
        t.on_event(Heartbeat(B, 1, 0.001, quiet=HB), 2 * HB * i)
    assert row(t, 20 * HB)["heartbeat_loss"] == 0.0 and row(t, 20 * HB)["healthy"]
    # ... and between two of them a real silence of 4 intervals: 3 beats missing
    t.on_event(Heartbeat(B, 1, 0.001, quiet=4 * HB), 24 * HB)
    assert row(t, 24 * HB)["heartbeat_loss"] == round(3 / (11 + 3), 3)


def test_tracker_without_quiet_counts_gaps_between_heartbeats_as_before():
    t = tracker()
    t.on_event(up(), 0.0)
    for i in range(1, 11):
        t.on_event(Heartbeat(B, 1, 0.001), 2 * HB * i)   # no other traffic known: every other beat missing
    assert row(t, 20 * HB)["heartbeat_loss"] == round(9 / 19, 3)

