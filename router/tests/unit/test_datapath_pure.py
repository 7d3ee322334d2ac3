"""Pure data-plane logic: sleeve codec, replay window, MAC learning, forwarding, fast-path decisions."""

import random

import pytest

from weavenet.datapath import fastdp, sleeve
from weavenet.datapath.forward import Forwarder, Out
from weavenet.datapath.macs import MacTable
from weavenet.datapath.replay import ReplayWindow
from weavenet.mesh.routes import RouteTable

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
KEY = bytes(range(32))


def test_sleeve_roundtrip_plain_and_encrypted():
    frames = [b"\x01" * 60, b"\x02" * 1400, b""]
    for key in (None, KEY):
        dg = sleeve.encode(sleeve.name_bytes(A), 7, sleeve.name_bytes(B), sleeve.BROADCAST, frames, key, True)
        sender, seq, enc = sleeve.peek(dg)
        assert (sleeve.name_str(sender), seq, enc) == (A, 7, key is not None)
        origin, dest, relay_only, got = sleeve.decode_body(dg, seq, key)
        assert (sleeve.name_str(origin), dest, relay_only, got) == (B, sleeve.BROADCAST, True, frames)


def test_encrypted_sleeve_hides_payload_and_rejects_tampering():
    payload = b"top secret frame payload" * 10
    dg = sleeve.encode(sleeve.name_bytes(A), 1, sleeve.name_bytes(A), sleeve.name_bytes(B), [payload], KEY)
    assert b"top secret" not in dg
    for pos in (3, 12, len(dg) - 1, 30):  # header (AAD), sequence, tag, body
        bad = bytearray(dg)
        bad[pos] ^= 0x40
        with pytest.raises(sleeve.SleeveError) as e:
            _, seq, _ = sleeve.peek(bytes(bad))
            sleeve.decode_body(bytes(bad), seq, KEY)
        assert e.value.reason in ("auth", "malformed")
    with pytest.raises(sleeve.SleeveError):
        sleeve.decode_body(dg, 1, bytes(32))  # wrong key


@pytest.mark.parametrize("junk", [b"", b"W", b"\x00" * 40, b"GET / HTTP/1.1\r\n\r\n" * 3])
def test_sleeve_garbage_is_malformed(junk):
    with pytest.raises(sleeve.SleeveError):
        _, seq, _ = sleeve.peek(junk)
        sleeve.decode_body(junk, seq, None)


def test_sleeve_truncated_frame_list_is_malformed():
    dg = sleeve.encode(sleeve.name_bytes(A), 0, sleeve.name_bytes(A), sleeve.BROADCAST, [b"x" * 100], None)
    with pytest.raises(sleeve.SleeveError):
        sleeve.decode_body(dg[:-10], 0, None)


def test_replay_window():
    w = ReplayWindow(size=64)
    for s in (5, 3, 10, 4):
        assert w.check(s)
        w.accept(s)
    assert not w.check(5) and not w.check(10) and not w.check(3)
    assert w.check(9) and w.check(100)
    w.accept(100)
    assert not w.check(36)  # 64 behind the highest: too old
    assert w.check(37)
    # check() alone does not record: a forged datagram cannot consume a sequence number.
    assert w.check(101) and w.check(101)


def test_replay_window_random_order_accepts_each_once():
    rng = random.Random(3)
    seqs = list(range(500))
    rng.shuffle(seqs)
    w = ReplayWindow(size=4096)
    accepted = 0
    for s in seqs + seqs[:50]:
        if w.check(s):
            w.accept(s)
            accepted += 1
    assert accepted == 500


def test_mac_table_learns_moves_and_expires():
    t = MacTable(ttl=10)
    m = b"\x02\x00\x00\x00\x00\x01"
    assert t.learn(m, A, 0) is True
    assert t.lookup(m, 5) == A
    assert t.learn(m, B, 6) is True and t.moves == 1
    assert t.lookup(m, 6) == B
    assert t.lookup(m, 20) is None
    assert t.expire(20) == 1
    t.learn(m, C, 21)
    assert t.macs_of(C) == [m] and t.forget_peer(C) == [m] and t.lookup(m, 21) is None
    assert t.snapshot(21) == []


def full_mesh_routes(me):
    adj = {A: [B, C], B: [A, C], C: [A, B]}
    return RouteTable(adj, me)


def test_forward_unicast_known_mac_and_broadcast():
    macs = MacTable()
    macs.learn(b"\x02" * 6, C, 0)
    f = Forwarder(A, full_mesh_routes(A), frozenset(), macs)
    assert f.from_local(b"\x02" * 6, 1) == [Out(C, C)]
    assert sorted(f.from_local(b"\xff" * 6, 1), key=lambda o: o.hop) == [Out(B, None), Out(C, None)]
    assert len(f.from_local(b"\x04" * 6, 1)) == 2  # unknown unicast floods like a broadcast


def test_forward_skips_fastdp_children_without_subtree():
    f = Forwarder(A, full_mesh_routes(A), frozenset({B}), MacTable())
    assert f.from_local(b"\xff" * 6, 1) == [Out(C, None)]


def test_forward_relay_only_copy_when_fastdp_child_has_subtree():
    adj = {A: [B], B: [A, C], C: [B]}
    f = Forwarder(A, RouteTable(adj, A), frozenset({B}), MacTable())
    assert f.from_local(b"\xff" * 6, 1) == [Out(B, None, relay_only=True)]
    fb = Forwarder(B, RouteTable(adj, B), frozenset({A}), MacTable())
    assert fb.from_sleeve(A, None, relay_only=True) == (False, [Out(C, None)])
    fc = Forwarder(C, RouteTable(adj, C), frozenset(), MacTable())
    assert fc.from_sleeve(A, None, relay_only=False) == (True, [])


def test_forward_unicast_relay_and_no_route():
    adj = {A: [B], B: [A, C], C: [B]}
    fb = Forwarder(B, RouteTable(adj, B), frozenset(), MacTable())
    assert fb.from_sleeve(A, C, False) == (False, [Out(C, C)])
    assert fb.from_sleeve(A, B, False) == (True, [])
    assert fb.from_sleeve(A, "02:00:00:00:00:99", False) == "no_route"
    macs = MacTable()
    macs.learn(b"\x02" * 6, "02:00:00:00:00:99", 0)
    fa = Forwarder(A, RouteTable(adj, A), frozenset(), macs)
    assert fa.from_local(b"\x02" * 6, 1) == "no_route"


def test_fastdp_decider_up_down_and_status():
    d = fastdp.FastPathDecider()
    d.set_candidates({B: ("192.0.2.2", "02:aa:00:00:00:02")})
    assert d.evaluate(0) == ([], [])
    d.heard(B, 1.0)
    assert d.status_due(B, 1.0) is True and d.status_due(B, 1.1) is None
    assert d.evaluate(1.0) == ([], [])      # the peer has not confirmed it hears us
    d.remote_status(B, True, 1.2)
    assert d.evaluate(1.2) == ([B], []) and d.active() == {B}
    late = 1.0 + fastdp.RX_TIMEOUT + 0.1
    assert d.evaluate(late) == ([], [])     # silent on TCP too: a stalled peer, not a broken path
    assert d.status_due(B, late) is None    # ... and we do not tell it we lost its heartbeats
    assert d.control_heard(B, late)         # it talks over TCP, but no heartbeat arrives
    assert d.evaluate(late) == ([], [])     # (its heartbeat has REPLY_GRACE to turn up)
    assert d.evaluate(late + fastdp.REPLY_GRACE) == ([], [B])   # our side stopped hearing it: the path is broken
    d.heard(B, 5.0)
    d.remote_status(B, False, 5.0)
    assert d.evaluate(5.0) == ([], [])      # the peer says it does not hear us
    gone = d.set_candidates({})
    assert {n: g.ip for n, g in gone.items()} == {B: "192.0.2.2"} and d.active() == frozenset()


def test_fastdp_a_stalled_peer_keeps_its_path_and_a_stale_status_counts_only_if_it_talks():
    d = fastdp.FastPathDecider()
    d.set_candidates({B: ("192.0.2.2", "02:aa:00:00:00:02")})
    d.heard(B, 1.0)
    d.remote_status(B, True, 1.0)
    assert d.evaluate(1.0) == ([B], [])
    assert d.evaluate(30.0) == ([], [])     # nothing from it at all for 29 s: still up (its TCP ends if gone)
    d.control_heard(B, 30.0)                # then it talks over TCP: its path has been silent all along
    assert d.evaluate(30.0 + fastdp.REPLY_GRACE) == ([], [B])
    d.heard(B, 31.0)                        # heartbeats again, and it said it hears us at 1.0 only
    d.control_heard(B, 31.0)
    assert d.evaluate(31.0) == ([], [])     # its status is stale while it talks: stays down
    d.remote_status(B, True, 31.5)
    assert d.evaluate(31.5) == ([B], [])
    assert d.evaluate(31.6, direct=frozenset()) == ([], [B])   # the mesh routes around it: not direct any more
    assert d.evaluate(31.7, direct={B}) == ([], [])          # its second fall within a minute: damped,
    assert d.evaluate(31.6 + fastdp.HOLD_BASE, direct={B}) == ([B], [])   # back after HOLD_BASE


def up_path(d: fastdp.FastPathDecider, at: float) -> fastdp.PathState:
    d.set_candidates({B: ("192.0.2.2", "02:aa:00:00:00:02")})
    d.heard(B, at)
    assert d.status_due(B, at) is True       # we told it we hear it
    d.remote_status(B, True, at)
    assert d.evaluate(at) == ([B], [])
    return d.paths[B]


def test_fastdp_a_quiet_path_is_asked_once_and_one_lost_heartbeat_costs_no_fallback():
    d = fastdp.FastPathDecider()
    p = up_path(d, 10.0)
    assert not d.ask_due(B, 10.0 + fastdp.ASK_AFTER - 0.01)   # a heartbeat a little late: no ask yet
    assert d.ask_due(B, 10.0 + fastdp.ASK_AFTER + 0.01) and p.asked_at == 10.0 + fastdp.ASK_AFTER + 0.01
    assert not d.ask_due(B, 12.0)                               # once per quiet spell
    d.heard(B, 11.35)                       # its answer: a heartbeat through the path (read on a tick) ...
    assert not d.control_heard(B, 11.36)    # ... and its status over TCP: no proof against a path just heard
    assert d.evaluate(13.0) == ([], []) and d.active() == {B}
    assert d.ask_due(B, 11.35 + fastdp.ASK_AFTER + 0.01)       # quiet again later: asked again


def test_fastdp_a_cut_path_falls_back_after_the_answer_without_its_heartbeat():
    d = fastdp.FastPathDecider()
    up_path(d, 10.0)
    t = 10.0 + fastdp.ASK_AFTER + 0.01
    assert d.ask_due(B, t)
    assert d.control_heard(B, t + 0.002)    # the answer over TCP: its router lives, its heartbeat is due
    assert d.evaluate(t + 0.1) == ([], [])
    down = t + 0.002 + fastdp.REPLY_GRACE
    assert d.evaluate(down) == ([], [B]) and not d.hears(B, down)
    assert down - 10.0 < 2.0                # a cut is seen within 2 s of the last heartbeat's arrival
    assert not d.ask_due(B, down + 5)       # a broken path is not asked again and again


def test_fastdp_asks_are_answered_at_most_every_answer_min():
    d = fastdp.FastPathDecider()
    p = up_path(d, 10.0)
    d.asked(B, 11.0)
    assert p.answer_due
    p.answer_due = False                    # (the data plane answered at its tick)
    d.asked(B, 11.0 + fastdp.ANSWER_MIN / 2)
    assert not p.answer_due                 # a flood of asks costs one answer per ANSWER_MIN
    d.asked(B, 11.0 + fastdp.ANSWER_MIN)
    assert p.answer_due
    d.asked("02:00:00:00:00:99", 12.0)      # from no fast-path peer: nothing
    assert set(d.paths) == {B}
    assert d.status_due(B, 12.0, force=True) is True   # an answer tells our status even when unchanged


def test_fastdp_status_parse_refuses_what_is_not_exactly_a_status():
    assert fastdp.parse_status(fastdp.status_message(True)) == (True, False)
    assert fastdp.parse_status(fastdp.status_message(False, ask=True)) == (False, True)
    for bad in (b"", b"[1]", b"\xff", b'{"fastdp_rx": 1, "ask": "yes"}', b'"x"', b"null", b"{" * 10000):
        assert fastdp.parse_status(bad) == (False, False)


def test_heartbeat_frame_roundtrip():
    f = fastdp.heartbeat_frame("02:aa:00:00:00:01", "02:aa:00:00:00:02", A, 12.5)
    assert f[:6] == bytes.fromhex("02aa00000002") and fastdp.parse_heartbeat(f) == A
    assert fastdp.parse_heartbeat(f[:20]) is None
    assert fastdp.parse_heartbeat(b"\x00" * 12 + b"\x08\x00" + b"\x00" * 30) is None
    padded = fastdp.heartbeat_frame("02:aa:00:00:00:01", "02:aa:00:00:00:02", A, 12.5, 14 + 1376)
    assert len(padded) == 14 + 1376 and fastdp.parse_heartbeat(padded) == A   # full size, still parsed


def test_fastdp_why_down_names_the_reason():
    d = fastdp.FastPathDecider()
    up_path(d, 10.0)
    assert d.why_down(B, 10.5) == "up"
    assert d.why_down(B, 10.5, direct=frozenset()) == "not routed directly"
    d.remote_status(B, False, 10.6)
    assert d.why_down(B, 10.6) == "it hears none of ours"
    d.remote_status(B, True, 10.7)
    d.control_heard(B, 11.5)
    assert d.why_down(B, 11.9).startswith("none of its heartbeats for 1.9s")


def test_fastdp_a_flapping_path_is_held_down_longer_each_time_and_forgiven_after_a_quiet_minute():
    d = fastdp.FastPathDecider()
    p = up_path(d, 10.0)

    def fall_and_return(t: float) -> float:
        """The peer says it hears none of ours at t, then hears them again: when does the path return?"""
        d.remote_status(B, False, t)
        assert d.evaluate(t) == ([], [B])
        d.remote_status(B, True, t + 0.1)
        d.heard(B, t + 0.1)
        for k in range(1, 700):
            now = t + 0.1 * k
            d.heard(B, now)
            if d.evaluate(now) == ([B], []):
                return now - t
        raise AssertionError("never returned")

    assert fall_and_return(20.0) < 0.2                  # one fall: back at once
    assert 2.0 <= fall_and_return(30.0) < 2.2           # again within a minute: held 2 s
    assert 4.0 <= fall_and_return(40.0) < 4.2           # then 4 s
    assert p.falls == 3
    assert fall_and_return(150.0) < 0.2                 # a quiet minute after: forgiven
    assert p.falls == 1
    t, holds = 300.0, []
    for _ in range(8):                                  # however often it flaps, the hold stops at HOLD_MAX
        t += fall_and_return(t) + 0.5
        holds.append(max(0.0, p.hold_until - p.fell_at))
    assert holds == [0.0, 2.0, 4.0, 8.0, 16.0, 32.0, fastdp.HOLD_MAX, fastdp.HOLD_MAX]
