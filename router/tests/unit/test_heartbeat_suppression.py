"""Heartbeat suppression (issue #11, cost per peer): a connection that carried other messages of ours since the
last heartbeat slot skips that heartbeat (never two in a row); the peer's health tracker counts the connection's
silence, so a skipped heartbeat is not loss, and a silent peer is still dropped within the timeout."""

from __future__ import annotations

from weavenet.mesh.channel import MsgType
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


def test_other_messages_replace_every_other_heartbeat_and_the_peer_sees_no_loss():
    net, a, b, got = pair_with_traffic()
    kinds: list[tuple[float, MsgType]] = []
    orig = a._heartbeat

    def hb(conn, now):
        kinds.append((now, MsgType.HEARTBEAT))
        return orig(conn, now)
    a._heartbeat = hb
    before = a.heartbeats_suppressed
    for _ in range(100):   # 10 s with an application message from a every 0.1 s
        net.run(net.addr_of(a), a.send_app("test", b"x"))
        net.step(0.1)
    skipped = a.heartbeats_suppressed - before
    sent = len(kinds)
    # 10 s = ~14 slots: about half skipped, never two in a row (so at least every other one sent)
    assert 5 <= skipped <= 8 and 6 <= sent <= 9, (skipped, sent)
    gaps = [t2 - t1 for (t1, _), (t2, _) in zip(kinds, kinds[1:], strict=False)]
    assert max(gaps) <= 2 * a.config.heartbeat_interval + 0.11
    beats = [e for e in got if isinstance(e, Heartbeat)]
    assert beats and all(e.quiet is not None and e.quiet <= 0.11 for e in beats[1:])   # the silence: one step
    assert len(b.live_connections()) == 1 and len(a.live_connections()) == 1


def test_an_idle_connection_sends_every_heartbeat():
    net, a, b, got = pair_with_traffic()
    before = a.heartbeats_suppressed
    net.advance(7)    # nothing but heartbeats and the periodic summary
    beats = [e for e in got if isinstance(e, Heartbeat)]
    assert len(beats) >= 6
    # the summary (every 1-3 s) may stand in for one heartbeat now and then: few skipped, quiet stays short
    assert a.heartbeats_suppressed - before <= 4
    assert max(e.quiet for e in beats[1:]) <= 2 * a.config.heartbeat_interval + 0.06


def test_a_pending_connection_never_skips_its_heartbeat():
    """Its first heartbeat's echo is what makes it established: it is never suppressed."""
    net = SimNet()
    a, b = net.add(1), net.add(2)
    net.run(net.addr_of(a), a.connect([net.addr_of(b)], net.now))
    net.until(lambda: full_mesh(net), 10)
    conn = a.live_connections()[0]
    conn.state = conn.state.__class__.PENDING
    conn.channel.sent += 5
    assert a._suppress_heartbeat(conn) is False


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

