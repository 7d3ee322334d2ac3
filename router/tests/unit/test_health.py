"""The health tracker (fed events, as the dispatcher does) and the "health" gossip channel (hostile input,
ordering, forwarding), and that the mesh says Heartbeat and ConnectionFailed on real cores in memory."""

from __future__ import annotations

import json

import pytest

from weavenet.health import summary as sm
from weavenet.health.service import FIGURES_INTERVAL, HealthService
from weavenet.health.summary import Link, SummaryStore
from weavenet.health.tracker import LOSS_UNHEALTHY, HealthTracker, classify
from weavenet.mesh.events import (
    DUPLICATE,
    ConnectionDown,
    ConnectionFailed,
    ConnectionUp,
    Heartbeat,
    PeersChanged,
    RoutesChanged,
)
from weavenet.mesh.routes import RouteTable
from weavenet.weaver.dataplane import DatapathChanged

from .meshsim import SimNet

US, B, C = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
HB = 0.7


def tracker(max_peers: int = 100, fastdp: bool = True) -> HealthTracker:
    return HealthTracker(US, mtu=1376, fastdp=fastdp, heartbeat_interval=HB, max_peers=max_peers)


def up(peer: str = B, cid: int = 1, enc: bool = False, fastdp: bool = True) -> ConnectionUp:
    return ConnectionUp(peer, cid, "192.0.2.2", 6783, True, {"fastdp": "02:aa:00:00:00:01"} if fastdp else {},
                        (b"k" * 32, b"k" * 32) if enc else None)


def row(t: HealthTracker, now: float, peer: str = B) -> dict:
    return next(r for r in t.report(now) if r["name"] == peer)


def test_rtt_median_and_max_over_the_window_and_no_loss_when_beats_come_on_time():
    t = tracker()
    t.on_event(up(), 0.0)
    for i, rtt in enumerate([0.001, 0.002, 0.010, 0.002, 0.003]):
        t.on_event(Heartbeat(B, 1, rtt), HB * (i + 1))
    r = row(t, HB * 5 + 0.1)
    assert (r["rtt_ms"], r["rtt_max_ms"]) == (2.0, 10.0)
    assert r["heartbeat_loss"] == 0.0 and r["healthy"] and r["state"] == "connected"
    assert (r["datapath"], r["encrypted"], r["mtu"]) == ("sleeve", False, 1376)
    # A minute later the samples are out of the window.
    assert row(t, HB * 5 + 61)["rtt_ms"] is None


def test_heartbeats_that_stop_arriving_count_as_lost_and_mark_the_peer():
    t = tracker()
    t.on_event(up(), 0.0)
    for i in range(10):
        t.on_event(Heartbeat(B, 1, 0.001), HB * (i + 1))
    now = HB * 10 + HB * 5.2    # five intervals of silence after ten beats
    r = row(t, now)
    # (after the last heartbeat the next may have been skipped for other traffic: 3 missing, not 4)
    assert r["heartbeat_loss"] == pytest.approx(3 / 13, abs=0.01) and r["heartbeat_loss"] > LOSS_UNHEALTHY
    assert not r["healthy"] and any("heartbeat loss" in p for p in r["problems"])


def test_a_heartbeat_of_another_connection_or_peer_counts_for_nothing():
    t = tracker()
    t.on_event(up(cid=1), 0.0)
    t.on_event(Heartbeat(B, 2, 0.5), 0.5)    # a duplicate connection that lost the tie-break
    t.on_event(Heartbeat(C, 3, 0.5), 0.5)    # a peer never seen: no entry made
    assert row(t, 1.0)["rtt_ms"] is None and [r["name"] for r in t.report(1.0)] == [B]


def test_fastdp_up_then_fallback_is_counted_and_marked_after_the_grace():
    t = tracker()
    t.on_event(up(), 0.0)
    t.on_event(DatapathChanged(B, "fastdp"), 1.0)
    assert row(t, 2.0)["datapath"] == "fastdp" and row(t, 2.0)["healthy"]
    t.on_event(DatapathChanged(B, "sleeve"), 3.0)
    t.on_event(DatapathChanged(B, "bogus"), 3.0)     # not a datapath: ignored
    r = row(t, 20.0)
    assert (r["datapath"], r["fallbacks"]) == ("sleeve", 1)
    assert "fell back to sleeve" in r["problems"]


def test_encrypted_peers_are_not_expected_on_the_fast_path():
    t = tracker()
    t.on_event(up(enc=True), 0.0)
    r = row(t, 60.0)
    assert r["encrypted"] is True and r["healthy"]


def test_reconnects_failures_and_their_kinds():
    t = tracker()
    t.on_event(up(cid=1), 0.0)
    t.on_event(ConnectionDown(B, 1, "no heartbeat for 2.3s"), 5.0)
    r = row(t, 6.0)
    assert (r["state"], r["last_failure_kind"], r["healthy"]) == ("unreachable", "timeout", False)
    # The redial fails at the address the peer had: attributed to it.
    t.on_event(ConnectionFailed("192.0.2.2:6783", "peer 02:..(b) failed authentication: wrong password", True),
               7.0)
    r = row(t, 8.0)
    assert (r["state"], r["last_failure_kind"]) == ("failing", "password")
    t.on_event(up(cid=2), 9.0)
    r = row(t, 10.0)
    assert (r["state"], r["reconnects"], r["state_for_s"]) == ("connected", 1, 1.0)
    assert r["failures"] == {"timeout": 1, "password": 1}
    # Inbound failures from nobody we know only count, however many.
    for i in range(1000):
        t.on_event(ConnectionFailed(f"198.51.100.{i % 250}:{i}", "not a weavenet peer (bad protocol header)",
                                    False), 11.0)
    assert t.unattributed_failures["version"] == 1000 and len(t.peers) == 1


def test_a_duplicate_connection_resolved_is_neither_a_failure_nor_a_reconnect():
    t = tracker()
    t.on_event(up(cid=1), 0.0)
    t.on_event(ConnectionDown(B, 1, DUPLICATE), 1.0)   # both ends dialled: the mesh drops one, then ...
    t.on_event(up(cid=2), 1.0)                         # ... the other is up
    r = row(t, 2.0)
    assert (r["state"], r["reconnects"], r["last_failure"], r["state_for_s"]) == ("connected", 0, "", 2.0)


@pytest.mark.parametrize("reason,kind", [
    ("connection refused", "unreachable"), ("no route to host", "unreachable"),
    ("connection timed out", "timeout"), ("handshake timed out", "timeout"),
    ("peer x has a password but we have none (encryption mismatch)", "password"),
    ("protocol version mismatch: 1..1 vs 3..4", "version"), ("closed by peer: router shutting down", "restarted"),
    ("EOF", "closed"), ("something new", "other")])
def test_failure_reasons_are_classified(reason, kind):
    assert classify(reason) == kind


def test_relayed_peers_name_their_next_hop_and_unreachable_ones_are_marked():
    t = tracker()
    t.on_event(RoutesChanged(RouteTable({US: [B], B: [US, C], C: [B]}, US)), 0.0)
    t.on_event(PeersChanged(frozenset({B, C}), frozenset({B}), frozenset({B, C})), 0.0)
    t.on_event(up(B, 1), 0.0)
    r = row(t, 1.0, C)
    assert (r["state"], r["datapath"], r["via"], r["healthy"]) == ("relayed", "relayed", B, True)
    # C's own connection, lost while B still relays: C is reachable, the direct link is marked broken.
    t.on_event(up(C, 2), 1.0)
    t.on_event(ConnectionDown(C, 2, "no heartbeat for 2.3s"), 1.5)
    r = row(t, 1.6, C)
    assert (r["state"], r["via"], r["problems"]) == ("relayed", B, ["direct connection lost (timeout)"])
    t.on_event(RoutesChanged(RouteTable({US: [B], B: [US]}, US)), 2.0)
    assert row(t, 3.0, C)["state"] == "unreachable" and not row(t, 3.0, C)["healthy"]
    t.on_event(PeersChanged(frozenset({B}), frozenset({B}), frozenset({B})), 4.0)   # C garbage-collected
    assert [r["name"] for r in t.report(5.0)] == [B]


def test_the_table_is_capped_like_the_mesh():
    t = tracker(max_peers=3)
    names = [f"02:00:00:00:01:{i:02x}" for i in range(10)]
    t.on_event(PeersChanged(frozenset(), frozenset(), frozenset(names)), 0.0)
    for i, n in enumerate(names):
        t.on_event(up(n, i + 1), 0.0)
    assert len(t.peers) == 3 and t.refused_peers > 0


# --- the gossip channel ------------------------------------------------------------------------------------
def entry(origin: str = B, epoch: int = 1, seq: int = 1, links=None, nick: str = "b", containers: int = 2,
          rev: int = 0) -> dict:
    return {"o": origin, "e": epoch, "n": seq, "r": rev, "k": nick, "c": containers,
            "l": links if links is not None else [[US, "connected", "fastdp", False, 1, 0, True]]}


def delta(base: int, seq: int, links=(), removed=(), origin: str = B, epoch: int = 1, rev: int = 0) -> dict:
    return {**entry(origin, epoch, seq, list(links), rev=rev), "b": base, "x": list(removed)}


def msg(*entries, v: int = 2) -> bytes:
    return json.dumps({"v": v, "s": list(entries)}).encode()


def store() -> SummaryStore:
    s = SummaryStore(US, 1000, max_peers=50)
    s.peers_changed(frozenset({B, C}))
    return s


def test_a_summary_is_stored_and_passed_on_only_when_news():
    s = store()
    out = s.merge(B, msg(entry()), 1.0)
    assert out is not None and json.loads(out)["s"][0]["o"] == B
    assert s.merge(C, msg(entry()), 2.0) is None                 # the same again: nothing to pass on
    # Only new figures (RTT): stored, not flooded (anti-entropy carries them).
    assert s.merge(C, msg(entry(seq=1, rev=2, links=[[US, "connected", "fastdp", False, 9, 0, True]])), 3.0) is None
    assert s.entries[B].rev == 2 and s.entries[B].links[0].rtt_ms == 9
    # A state change is news, passed on as a delta (the changed link only) from the seq we held.
    out = s.merge(C, msg(entry(seq=3, rev=3, links=[[US, "broken", "none", False, None, None, False]])), 4.0)
    assert out is not None and json.loads(out)["s"][0] == delta(1, 3, [[US, "broken", "none", False, None, None,
                                                                        False]], rev=3)
    assert s.merge(C, msg(entry(seq=1)), 5.0) is None and s.entries[B].seq == 3   # older: ignored


def test_the_origin_itself_overrides_a_relayed_entry_from_the_future():
    s = store()
    s.merge(C, msg(entry(epoch=2**53, seq=5, nick="forged")), 1.0)
    assert s.entries[B].nickname == "forged"
    s.merge(B, msg(entry(epoch=2000, seq=1, nick="b")), 2.0)
    assert s.entries[B].nickname == "b"


@pytest.mark.parametrize("payload", [
    b"not json", b"[]", b'{"v": "1"}', msg(entry(origin="not-a-name")), msg(entry(links=[[US, "up"]])),
    msg(entry(links=[[US, "connected", "warp", False, 1, 0, True]])),
    msg(entry(links=[[US, "connected", "fastdp", False, -1, 0, True]])),
    msg(entry(links=[[US, "connected", "fastdp", 0, 1, 0, True]])),
    msg(entry(links=[[US, "connected", "fastdp", False, 1, 1001, True]])),
    msg(entry(nick="x" * 65)), msg(entry(nick="evil\x1b[31m")), msg(entry(containers=True)),
    msg({**entry(), "extra": 1}), msg(entry(links=[[US, "connected", "fastdp", False, 1, 0, True]] * 1025)),
    msg(entry(links=[[US, "connected", "fastdp", False, 1, 0, True]] * 2)), msg({**entry(), "r": -1}),
    msg(delta(2, 2)), msg(delta(3, 2)), msg({**delta(1, 2), "x": "all"}), msg(delta(1, 2, removed=["nobody"])),
    msg({**delta(1, 2), "x": [US] * 1025}), msg({k: v for k, v in delta(1, 2).items() if k != "x"}),
    msg({k: v for k, v in entry().items() if k != "r"}), b'{"v":0,"s":[]}', b'{"v":true,"s":[]}',
    msg(*[entry(origin=f"02:00:00:00:02:{i:02x}") for i in range(51)]),
    b'{"v":1,"s":[' + b"[" * 100000 + b"]" * 100000 + b"]}",
    b'{"v":1,"s":[],"pad":"' + b"x" * sm.MAX_PAYLOAD + b'"}',
])
def test_hostile_summaries_are_counted_and_dropped_whole(payload):
    s = store()
    assert s.merge(B, payload, 1.0) is None
    assert s.refused["malformed"] == 1 and s.entries == {}


def test_entries_already_held_are_not_parsed_link_by_link_but_a_needed_bad_one_refuses_all(monkeypatch):
    """A new neighbour's full state and the copies of one change relayed by several neighbours are mostly
    entries held already: only their header is checked (a join used to parse N entries of N links from each of
    N neighbours). An entry that would be used is checked whole, and a bad one still refuses the message."""
    s = store()
    s.merge(B, msg(entry(seq=3), entry(origin=C, seq=2)), 1.0)
    parsed = []
    real = sm._link
    monkeypatch.setattr(sm, "_link", lambda v: parsed.append(v) or real(v))
    held = [entry(seq=3), entry(origin=C, seq=2), delta(2, 3), entry(origin=US, seq=99)]
    assert s.merge(C, msg(*held), 2.0) is None and parsed == [] and s.refused["malformed"] == 0
    # Held, but not even its header is right: the message is refused.
    assert s.merge(C, msg(entry(seq=3), {**entry(origin=C, seq=2), "n": -1}), 2.0) is None
    assert s.refused["malformed"] == 1
    # A newer entry is parsed whole: one bad link in it and nothing of the message is applied.
    bad_link = [[US, "connected", "warp", False, 1, 0, True]]
    assert s.merge(C, msg(entry(origin=C, seq=5), entry(seq=4, links=bad_link)), 3.0) is None
    assert s.refused["malformed"] == 2 and s.entries[C].seq == 2 and s.entries[B].seq == 3
    s.merge(C, msg(entry(origin=C, seq=5)), 3.0)
    assert s.entries[C].seq == 5 and len(parsed) == 3


def test_a_full_state_reuses_the_encoding_of_entries_unchanged_since():
    s = store()
    s.merge(B, msg(entry(seq=3)), 1.0)
    first = s.full_state()
    s._wire[B] = (s.entries[B], b'{"cached":1}')
    assert s.full_state() == b'{"v":2,"s":[{"cached":1}]}'     # the same entry: not encoded again
    s.merge(B, msg(entry(seq=4)), 2.0)
    assert s.full_state() != first and json.loads(s.full_state())["s"][0]["n"] == 4


def test_a_newer_wire_version_and_unknown_origins_are_ignored():
    s = store()
    assert s.merge(B, msg(entry(), v=4), 1.0) is None and s.refused["malformed"] == 0   # (3 is the digest)
    stranger = "02:00:00:00:09:09"
    assert s.merge(B, msg(entry(origin=stranger)), 1.0) is None and s.refused["unknown_origin"] == 1
    assert s.merge(B, msg(entry(origin=US)), 1.0) is None and US not in s.entries   # ours is ours
    s.merge(B, msg(entry()), 1.0)
    s.peers_changed(frozenset({C}))   # B forgotten by the topology: its summary goes
    assert B not in s.entries


def test_full_state_stays_under_the_cap_ours_first():
    s = SummaryStore(US, 1, max_peers=2000)
    s.publish("us", 0, [Link(B, "connected", "sleeve", False, 1, 0, True)], 0.0)
    big = [[f"02:00:00:01:{i // 256:02x}:{i % 256:02x}", "connected", "sleeve", False, 1, 0, True]
           for i in range(1000)]
    names = [f"02:00:00:02:{i // 256:02x}:{i % 256:02x}" for i in range(40)]
    s.peers_changed(frozenset(names))
    for i, n in enumerate(names):
        s.merge(n, msg(entry(origin=n, links=big)), float(i))
    full = s.full_state()
    assert full is not None and len(full) <= sm.MAX_PAYLOAD
    got = json.loads(full)["s"]
    assert got[0]["o"] == US and 1 < len(got) < 41


def test_service_publishes_a_state_change_at_once_and_figures_quietly():
    t = tracker()
    svc = HealthService(t, SummaryStore(US, 1, 100), "us")
    t.on_event(up(), 0.0)
    (send,) = svc.tick(0.0, containers=3)
    body = json.loads(send.payload)["s"][0]
    assert (send.channel, send.dest, body["c"], body["l"][0][:3]) == ("health", None, 3, [B, "connected", "sleeve"])
    for i in range(1, 15):
        t.on_event(Heartbeat(B, 1, 0.004), HB * i)
    assert svc.tick(1.5, containers=3) == []              # no medians computed between figure refreshes
    assert svc.store.entries[US].links[0].rtt_ms is None
    assert svc.tick(FIGURES_INTERVAL, containers=3) == []   # an RTT figure: stored (new rev), not sent
    ours = svc.store.entries[US]
    assert (ours.links[0].rtt_ms, ours.seq, ours.rev) == (4, 1, 2)
    svc.on_event(ConnectionDown(B, 1, "EOF"), 11.0)
    (send,) = svc.tick(11.5, containers=3)
    assert json.loads(send.payload)["s"][0] == {**delta(1, 2, [[B, "broken", "none", False, None, None, False]],
                                                        origin=US, rev=3), "k": "us", "c": 3}


def test_one_changed_link_of_many_costs_one_link_record_not_the_whole_summary():
    t = tracker(max_peers=300)
    svc = HealthService(t, SummaryStore(US, 1, 300), "us")
    peers = [f"02:00:00:00:01:{i:02x}" for i in range(200)]
    for i, p in enumerate(peers):
        t.on_event(up(p, i + 1), 0.0)
    (first,) = svc.tick(0.0, containers=0)
    svc.on_event(ConnectionDown(peers[7], 8, "EOF"), 1.0)
    (change,) = svc.tick(1.0, containers=0)
    assert len(first.payload) > 200 * 40 and len(change.payload) < 200
    # A neighbour that held the first summary ends with the same links as ours; it passes the delta on as is.
    other = SummaryStore(B, 2, 300)
    other.merge(US, first.payload, 0.5)
    assert other.merge(US, change.payload, 1.5) == change.payload
    assert other.entries[US].links == svc.store.entries[US].links


def test_a_delta_applies_only_on_its_base_a_gap_waits_for_anti_entropy():
    s = store()
    s.merge(B, msg(entry(seq=1)), 1.0)
    c_link = [C, "connected", "sleeve", True, 3, 0, True]
    assert s.merge(C, msg(delta(1, 2, [c_link])), 2.0) is not None
    assert [lk.peer for lk in s.entries[B].links] == [US, C] and s.entries[B].seq == 2
    assert s.merge(C, msg(delta(1, 2, [c_link])), 2.5) is None          # the same again: nothing
    assert s.merge(C, msg(delta(3, 4, removed=[US])), 3.0) is None and s.gaps == 1   # seq 3 missed
    assert [lk.peer for lk in s.entries[B].links] == [US, C]
    assert s.merge(C, msg(delta(2, 3, removed=[US])), 3.5) is not None
    assert [lk.peer for lk in s.entries[B].links] == [C] and s.gaps == 1
    assert s.merge(C, msg(delta(1, 2, epoch=2)), 4.0) is None and s.gaps == 2     # another epoch's delta
    # Anti-entropy: the full entry repairs whatever was missed.
    s.merge(C, msg(entry(seq=5, epoch=2, links=[c_link])), 5.0)
    assert s.entries[B].order == (2, 5, 0)
    # A delta that would leave more links than the cap is refused.
    big = [[f"02:00:00:01:{i // 256:02x}:{i % 256:02x}", "connected", "sleeve", False, 1, 0, True] for i in range(1000)]
    s.merge(B, msg(entry(seq=6, epoch=2, links=big)), 6.0)
    more = [[f"02:00:00:02:00:{i:02x}", "connected", "sleeve", False, 1, 0, True] for i in range(30)]
    assert s.merge(B, msg(delta(6, 7, more, epoch=2)), 7.0) is None and s.refused["malformed"] == 1
    assert s.entries[B].seq == 6


def test_an_older_routers_version_1_message_is_still_read():
    s = store()
    v1 = {k: v for k, v in entry(seq=4).items() if k != "r"}
    assert s.merge(B, msg(v1, v=1), 1.0) is not None and s.entries[B].order == (1, 4, 0)
    assert s.merge(B, msg(entry(seq=4), v=1), 1.0) is None and s.refused["malformed"] == 1   # "r" is not v1


def test_the_mesh_says_heartbeat_and_connection_failed():
    net = SimNet()
    a, b = net.add(1), net.add(2, password="other")
    net.recording.add(net.addr_of(a))
    net.run(net.addr_of(a), a.connect([net.addr_of(b), "192.0.2.99:6783"], net.now))
    net.advance(3)
    failed = [e for e in net.events[net.addr_of(a)] if isinstance(e, ConnectionFailed)]
    assert {e.address for e in failed} >= {"192.0.2.99:6783", net.addr_of(b)}
    assert any(classify(e.reason) == "password" for e in failed if e.address == net.addr_of(b))
    c = net.add(3)
    net.recording.add(net.addr_of(c))
    net.run(net.addr_of(c), c.connect([net.addr_of(a)], net.now))
    net.until(lambda: a.identity.name in c.routes.reachable(), 10)
    net.advance(3)
    beats = [e for e in net.events[net.addr_of(c)] if isinstance(e, Heartbeat)]
    assert len(beats) >= 3 and any(e.rtt is not None for e in beats) and {e.peer for e in beats} == {a.identity.name}


def digest_round(asker: SummaryStore, answerer: SummaryStore, now: float) -> bytes | None:
    """One anti-entropy round: the asker's digest to the answerer, the answer (if any) merged by the asker."""
    sent: list[tuple[bytes, str | None]] = []
    answerer.send = lambda payload, dest=None: sent.append((payload, dest))
    q = asker.digest()
    assert q is not None and answerer.merge(asker.ourname, q, now) is None
    if not sent:
        return None
    ((answer, dest),) = sent
    assert dest == asker.ourname
    asker.merge(answerer.ourname, answer, now)
    return answer


def test_anti_entropy_sends_versions_and_gets_back_only_what_it_lacks():
    names = [f"02:00:00:00:03:{i:02x}" for i in range(150)]
    a, b = SummaryStore(US, 1, 300), SummaryStore(B, 2, 300)
    for s in (a, b):
        s.peers_changed(frozenset(names + [US, B]))
    links = [[n, "connected", "sleeve", False, 1, 0, True] for n in names[:100]]
    for n in names:
        b.merge(n, msg(entry(origin=n, links=links)), 1.0)
    b.publish("b", 0, [Link(US, "connected", "sleeve", False, 1, 0, True)], 1.0)
    for n in names[:140]:                 # a has all but 10 of them, one of those at an older seq
        a.merge(n, msg(entry(origin=n, links=links, seq=0 if n == names[0] else 1)), 1.0)
    answer = digest_round(a, b, 2.0)
    assert answer is not None
    got = sorted(e.origin for e in sm.decode(answer, 300))
    assert got == sorted([B, names[0], *names[140:]])
    assert {n: s.order for n, s in a.entries.items()} == {n: s.order for n, s in b.entries.items()}
    # The digest is O(N) bytes; the full state it replaces is O(N x links).
    assert len(a.digest()) * 20 < len(b.full_state())
    assert digest_round(a, b, 3.0) is None        # nothing behind: no answer at all


def test_a_digest_answer_carries_a_few_entries_behind_only_in_figures():
    names = [f"02:00:00:00:03:{i:02x}" for i in range(40)]
    a, b = SummaryStore(US, 1, 300), SummaryStore(B, 2, 300)
    for s in (a, b):
        s.peers_changed(frozenset(names + [US, B]))
    for n in names:
        a.merge(n, msg(entry(origin=n, seq=1, rev=1)), 1.0)
        b.merge(n, msg(entry(origin=n, seq=1, rev=2)), 1.0)      # fresher RTT figures only
    answer = digest_round(a, b, 2.0)
    assert answer is not None and len(sm.decode(answer, 300)) == sm.FIGURES_PER_ANSWER
    rounds = 1
    while digest_round(a, b, 2.0 + rounds) is not None:
        rounds += 1
    assert rounds == -(-len(names) // sm.FIGURES_PER_ANSWER) and all(s.rev == 2 for s in a.entries.values())


@pytest.mark.parametrize("q", [
    "all", [[B, 1, 1]], [[B, 1, 1, 1], [B, 1, 2, 2]], [["nobody", 1, 1, 1]], [[B, -1, 1, 1]], [[B, 1, 1, True]],
    [[B, 1, 1, 1]] * 51,
])
def test_hostile_digests_are_counted_and_dropped(q):
    s = store()
    s.send = lambda payload, dest=None: pytest.fail("a bad digest is answered")
    assert s.merge(B, json.dumps({"v": 3, "q": q}).encode(), 1.0) is None
    assert s.refused["malformed"] == 1
    assert s.merge(B, json.dumps({"v": 3, "q": [], "s": []}).encode(), 1.0) is None and s.refused["malformed"] == 2
