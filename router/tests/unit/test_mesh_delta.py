"""Delta topology gossip: a change costs each router O(N) bytes, not a whole entry per neighbour."""

import json

import pytest

from weavenet.mesh.channel import Channel, MsgType
from weavenet.mesh.core import DELTA_FEATURE, SPAN_FEATURE
from weavenet.mesh.errors import ProtocolError
from weavenet.mesh.topology import ConnRecord, PeerDelta, PeerEntry, Topology

from .meshsim import SimNet, full_mesh
from .test_mesh_sim import launch_chain

A, B, C, D = (f"02:00:00:00:00:0{i}" for i in range(1, 5))


def rec(name: str, est: bool = True) -> ConnRecord:
    return ConnRecord(name, f"192.0.2.{int(name[-2:], 16)}:6783", True, est)


def entry(version: int, *conns: ConnRecord, name: str = A, inc: int = 1) -> PeerEntry:
    return PeerEntry(name, "a", 7, inc, version, tuple(sorted(conns, key=lambda c: c.name)))


def test_delta_between_and_apply_round_trip():
    old, new = entry(3, rec(B), rec(C, False), rec(D)), entry(5, rec(C), rec(D))
    d = PeerDelta.between(old, new)
    assert d is not None and (d.base, d.version, d.changed, d.removed) == (3, 5, (rec(C),), (B,))
    assert d.apply(old, 10) == new
    assert PeerDelta.from_wire(json.loads(d.wire_json)) == d


def test_no_delta_across_incarnations_or_backwards():
    assert PeerDelta.between(entry(3, rec(B)), entry(4, rec(B), inc=2)) is None
    assert PeerDelta.between(entry(4, rec(B)), entry(3, rec(B))) is None


def test_topology_applies_only_on_its_exact_base():
    t = Topology(entry(1, name=D), max_peers=10)
    t.merge([entry(3, rec(B))])
    applied, gaps = t.apply_deltas([PeerDelta(A, 1, 2, 4, (rec(C),))])      # base 2, we hold 3: a gap
    assert (applied, gaps) == ([], 1) and t.peers[A].version == 3
    d4 = PeerDelta(A, 1, 3, 4, (rec(C),), (B,))
    applied, gaps = t.apply_deltas([d4])
    assert gaps == 0 and applied == [(entry(4, rec(C)), [d4])] and t.peers[A] == entry(4, rec(C))
    assert t.apply_deltas([PeerDelta(A, 1, 3, 4, (rec(B),))]) == ([], 0)   # stale: already have 4


def test_a_chain_applies_from_any_version_it_passes_through():
    t = Topology(entry(1, name=D), max_peers=10)
    t.merge([entry(4, rec(C))])
    chain = [PeerDelta(A, 1, 3, 4, (rec(C),), (B,)), PeerDelta(A, 1, 4, 5, (rec(B, False),)),
             PeerDelta(A, 1, 5, 6, (rec(B),))]
    applied, gaps = t.apply_deltas(chain)        # we hold 4: the first is stale, the rest apply in one go
    assert gaps == 0 and applied == [(entry(6, rec(B), rec(C)), chain[1:])]


def test_delta_about_ourselves_makes_us_bump_past_it():
    t = Topology(entry(5, name=D), max_peers=10)
    ((ours, chain),), gaps = t.apply_deltas([PeerDelta(D, 1, 5, 9, (rec(B),))])
    assert gaps == 0 and chain == [] and ours.version == 10 and ours.connections == ()  # only we speak for us


def test_delta_cannot_grow_an_entry_past_the_peer_cap():
    t = Topology(entry(1, name=D), max_peers=3)
    t.merge([entry(1, rec(B))])
    with pytest.raises(ProtocolError, match="more than 3 connections"):
        t.apply_deltas([PeerDelta(A, 1, 1, 2, (rec(C), ConnRecord("02:00:00:00:00:09", "192.0.2.9:1", True, True),
                                              ConnRecord("02:00:00:00:00:0a", "192.0.2.10:1", True, True)))])


@pytest.mark.parametrize("wire, why", [
    ("nope", "not a list"),
    ([A, 1, 2, 3, [], []], None),
    ([A, 1, 3, 3, [], []], "not above its base"),
    ([A, 1, 3, 2, [], []], "not above its base"),
    ([A, 1, 0, 2 ** 21, [], []], "not above its base"),
    ([A, -1, 2, 3, [], []], "incarnation"),
    ([A, 1, 2, 3, [[B, "192.0.2.2:6783", 1]], []], "4 fields"),
    ([A, 1, 2, 3, [[B, "not an address", 1, 1]], []], "bad topology delta"),
    ([A, 1, 2, 3, [], ["not a name"]], "bad topology delta"),
    ([A, 1, 2, 3, [[A, "192.0.2.1:6783", 1, 1]], []], "connection to itself"),
    ([A, 1, 2, 3, [[B, "192.0.2.2:6783", 1, 1]], [B]], "named twice"),
    ([A, 1, 2, 3, [[B, "192.0.2.2:6783", 1, 1]] * 11, []], "at most 10"),
    ([A, 1, 2, 3, {}, []], "changed is not a list"),
])
def test_delta_wire_is_checked(wire, why):
    if why is None:
        assert PeerDelta.from_wire(wire, 10).order == (1, 3)
        return
    with pytest.raises(ProtocolError, match=why):
        PeerDelta.from_wire(wire, 10)


def test_entry_with_two_records_for_one_peer_is_refused():
    w = [A, "a", 7, 1, 2, [[B, "192.0.2.2:6783", 1, 1], [B, "192.0.2.3:6783", 0, 1]]]
    with pytest.raises(ProtocolError, match="two connection records"):
        PeerEntry.from_wire(w)


def gossip_bytes(net: SimNet) -> dict[str, int]:
    """Counts, per router, the bytes of topology gossip it sends (no password: the kind is readable)."""
    sent = {addr: 0 for addr in net.meshes}
    kinds = (MsgType.GOSSIP, MsgType.GOSSIP_DELTA)

    def hook(addr):
        def count(outputs):
            sent[addr] += sum(len(a.data) for a in outputs if type(a).__name__ == "Send" and a.data[4] in kinds)
            return outputs
        return count
    for addr in net.meshes:
        net.hooks[addr] = hook(addr)
    return sent


def cost_of_a_kill(n: int) -> float:
    net = SimNet()
    meshes = launch_chain(net, n)
    net.until(lambda: full_mesh(net), 60)
    net.advance(3)                        # the summaries' repairs of the join are over
    sent = gossip_bytes(net)
    net.kill(meshes[n // 2])
    net.until(lambda: full_mesh(net, n - 1), 5)
    net.advance(1)
    return sum(sent.values()) / (n - 1)


def test_a_change_costs_each_router_o_n_bytes():
    small, big = cost_of_a_kill(12), cost_of_a_kill(36)
    # Whole entries: each router sends its ~N-record entry to ~N neighbours, O(N^2) per router (9x for 3x N).
    assert big < 4 * small, (small, big)
    assert big < 120 * 36, big            # a few deltas of one record per peer, not entries of N records


def settled_star(*features_off: str):
    """Router 1 as the hub of 2, 3 and 4, settled; features_off: what the hub's hello lacks (an older router)."""
    net = SimNet()
    a, b, c, d = (net.add(i) for i in (1, 2, 3, 4))
    for f in features_off:
        a.identity.features.pop(f)
    for m in (b, c, d):
        net.run(net.addr_of(m), m.connect([net.addr_of(a)], net.now))
    net.until(lambda: full_mesh(net), 20)
    net.advance(3)
    return net, a, b, c, d


def test_peer_without_the_feature_gets_whole_entries():
    net, a, b, c, d = settled_star(DELTA_FEATURE)   # a plays an older router: its hello lacks the feature
    sent: list[tuple[int, int]] = []
    net.hooks[net.addr_of(b)] = lambda outs: sent.extend(
        (x.conn_id, x.data[4]) for x in outs if type(x).__name__ == "Send") or outs
    net.kill(d)
    net.until(lambda: full_mesh(net, 3), 5)
    conn = {x.remote.name: x.id for x in b.live_connections()}
    to_a = {k for cid, k in sent if cid == conn[a.identity.name]}
    to_c = {k for cid, k in sent if cid == conn[c.identity.name]}
    assert MsgType.GOSSIP in to_a and MsgType.GOSSIP_DELTA not in to_a
    assert MsgType.GOSSIP_DELTA in to_c


def test_a_gap_is_repaired_by_a_summary():
    net = SimNet()
    a, b, c = launch_chain(net, 3)
    net.until(lambda: full_mesh(net), 20)
    # b sends c a delta whose base c never held: c asks b (summary) and gets what it lacks.
    stale = b.topology.peers[a.identity.name]
    (b_to_c,) = [x for x in b.live_connections() if x.remote.name == c.identity.name]
    (c_to_b,) = [x for x in c.live_connections() if x.remote.name == b.identity.name]
    d = PeerDelta(a.identity.name, stale.incarnation, stale.version + 2, stale.version + 5, ())
    body = b'{"deltas":[' + d.wire_json + b"]}"
    outs = c.data_received(c_to_b.id, b_to_c.channel.encode(MsgType.GOSSIP_DELTA, body), net.now)
    assert c.counters["gossip_delta_gaps"] == 1
    sends = [x for x in outs if type(x).__name__ == "Send"]
    assert len(sends) == 1 and c_to_b.channel is not None
    assert Channel(None).feed(sends[0].data)[0][0] == MsgType.SUMMARY
    assert c.topology.peers[a.identity.name].version == stale.version   # nothing half-applied


def test_bad_delta_message_closes_only_that_connection():
    net = SimNet()
    a, b, c = launch_chain(net, 3)
    net.until(lambda: full_mesh(net), 20)
    (b_to_c,) = [x for x in b.live_connections() if x.remote.name == c.identity.name]
    (c_to_b,) = [x for x in c.live_connections() if x.remote.name == b.identity.name]
    for body in (b"[]", b'{"deltas": 5}', b'{"deltas": [[1]]}', b"\xff"):
        if c_to_b.id not in c.conns:
            break
        outs = c.data_received(c_to_b.id, b_to_c.channel.encode(MsgType.GOSSIP_DELTA, body), net.now)
        assert any(type(x).__name__ == "Close" for x in outs)
    assert c.protocol_errors.get(b.identity.name) == 1
    assert any(x.remote.name == a.identity.name for x in c.live_connections())


def test_a_summary_a_few_versions_behind_is_answered_with_deltas():
    net, a, b, c, d = settled_star()
    before = a.topology.ourself
    net.kill(d)                                       # a's entry loses a record: a delta goes out
    net.until(lambda: full_mesh(net, 3), 5)
    assert a.topology.ourself.version > before.version
    (a_to_b,) = [x for x in a.live_connections() if x.remote.name == b.identity.name]
    (b_to_a,) = [x for x in b.live_connections() if x.remote.name == a.identity.name]
    summary = {n: [e.incarnation, e.version] for n, e in b.topology.peers.items()}
    summary[a.identity.name] = [before.incarnation, before.version]   # b claims a's entry as before the kill
    outs = a.data_received(a_to_b.id, b_to_a.channel.encode(MsgType.SUMMARY, json.dumps(summary).encode()),
                           net.now)
    kinds = [Channel(None).feed(x.data)[0][0] for x in outs if type(x).__name__ == "Send"]
    assert kinds == [MsgType.GOSSIP_DELTA]


def test_compose_does_what_the_chain_does_once_per_record():
    old = entry(3, rec(B), rec(C, False))
    chain = [PeerDelta(A, 1, 3, 4, (rec(C),)), PeerDelta(A, 1, 4, 5, (rec(D, False),), (B,)),
             PeerDelta(A, 1, 5, 6, (rec(D), rec(B, False)))]
    one = PeerDelta.compose(chain)
    assert (one.base, one.version, one.removed) == (3, 6, ()) and one.size == 3   # B, C, D once each
    t1, t2 = Topology(entry(1, name="02:00:00:00:00:09"), 10), Topology(entry(1, name="02:00:00:00:00:09"), 10)
    t1.merge([old])
    t2.merge([old])
    t1.apply_deltas(chain)
    t2.apply_deltas([one])
    assert t1.peers[A] == t2.peers[A] == entry(6, rec(B, False), rec(C), rec(D))
    with pytest.raises(ValueError, match="not a chain"):
        PeerDelta.compose([chain[0], chain[2]])           # a hole: version 5 is missing
    overlapping = PeerDelta.compose([chain[0], PeerDelta(A, 1, 3, 6, (rec(D), rec(B, False)), ())])
    assert (overlapping.base, overlapping.version) == (3, 6)


def test_a_complete_delta_applies_to_any_version_in_between_from_a_span_sender_only():
    t = Topology(entry(1, name=D), max_peers=10)
    t.merge([entry(4, rec(B), rec(C, False))])         # we never held 3 (no history of it)
    d = PeerDelta(A, 1, 3, 6, (rec(C),), (B,))          # complete over 3..6
    assert t.apply_deltas([d]) == ([], 1)
    applied, gaps = t.apply_deltas([d], span=True)
    assert gaps == 0 and t.peers[A] == entry(6, rec(C))
    ((made, _),), gaps = t.apply_deltas([PeerDelta(A, 1, 5, 7, ())], span=True)   # base 5 < ours (6) < 7
    assert gaps == 0 and made == entry(7, rec(C))
    assert t.apply_deltas([PeerDelta(A, 1, 8, 9, ())], span=True)[1] == 1   # a hole stays a gap


def test_a_delta_based_on_a_version_we_held_before_still_applies():
    # The sender answered our summary (we held 3) while we moved on to 4 by another path: no gap.
    t = Topology(entry(1, name=D), max_peers=10)
    t.merge([entry(3, rec(B))])
    t.apply_deltas([PeerDelta(A, 1, 3, 4, (rec(C, False),))])
    applied, gaps = t.apply_deltas([PeerDelta(A, 1, 3, 6, (rec(C),), (B,))])
    assert gaps == 0 and t.peers[A] == entry(6, rec(C))
    assert t.held(A, (1, 4)) == entry(4, rec(B), rec(C, False)) and t.held(A, (1, 2)) is None


def test_history_is_bounded_and_forgotten_with_the_peer():
    from weavenet.mesh.topology import HISTORY_VERSIONS
    t = Topology(entry(1, name=D), max_peers=10)
    for v in range(1, HISTORY_VERSIONS + 10):
        t.merge([entry(v, rec(B, v % 2 == 0))])
    assert len(t._history[A]) == HISTORY_VERSIONS and t.held(A, (1, 2)) is None
    t.merge([entry(1, rec(B), inc=2)])               # a new life: the old one's versions are of no use
    assert A not in t._history
    t.merge([entry(2, rec(C), inc=2)])
    t.garbage_collect({D})
    assert A not in t._history


def test_a_summary_naming_a_version_we_held_gets_one_delta():
    net, a, b, c, d = settled_star()
    a._sent_chain.clear()                             # no chain to answer with: only the history
    before = a.topology.ourself
    net.kill(d)
    net.until(lambda: full_mesh(net, 3), 5)
    a._sent_chain.clear()
    (a_to_b,) = [x for x in a.live_connections() if x.remote.name == b.identity.name]
    a_to_b.remote.features.pop(SPAN_FEATURE)          # b plays a router that applies on the exact base only
    (b_to_a,) = [x for x in b.live_connections() if x.remote.name == a.identity.name]
    summary = {n: [e.incarnation, e.version] for n, e in b.topology.peers.items()}
    summary[a.identity.name] = [before.incarnation, before.version]
    outs = a.data_received(a_to_b.id, b_to_a.channel.encode(MsgType.SUMMARY, json.dumps(summary).encode()),
                           net.now)
    (msg,) = [Channel(None).feed(x.data)[0] for x in outs if type(x).__name__ == "Send"]
    assert msg[0] == MsgType.GOSSIP_DELTA
    (one,) = json.loads(msg[1])["deltas"]
    assert one[2:4] == [before.version, a.topology.ourself.version] and one[5] == [d.identity.name]


def test_what_an_older_router_sent_across_several_versions_is_passed_on_whole():
    net = SimNet()
    a, b, c = launch_chain(net, 3)
    net.until(lambda: full_mesh(net), 20)
    net.advance(3)
    (b_to_a,) = [x for x in b.live_connections() if x.remote.name == a.identity.name]
    (a_to_b,) = [x for x in a.live_connections() if x.remote.name == b.identity.name]
    b_to_a.remote.features.pop(SPAN_FEATURE)           # a plays an older router: its steps may be incomplete
    held = b.topology.peers[c.identity.name]
    d = PeerDelta(c.identity.name, held.incarnation, held.version, held.version + 3, ())
    b.data_received(b_to_a.id, a_to_b.channel.encode(MsgType.GOSSIP_DELTA, b'{"deltas":[' + d.wire_json + b"]}"),
                    net.now)
    assert b.topology.peers[c.identity.name].version == held.version + 3
    assert b._pending_deltas[c.identity.name] is None    # not passed on as a (maybe incomplete) delta


def star_join(n: int) -> tuple[int, int]:
    """n-1 peers join one hub over 5 s (half dial it, it dials the others); the hub's topology gossip bytes
    until all are in its view and settled, and the delta gaps anyone saw."""
    net = SimNet()
    hub = net.add(1)
    spokes = [net.add(i, discovery=False) for i in range(2, n + 1)]
    sent = gossip_bytes(net)
    for i, m in enumerate(spokes):
        if i % 2:
            net.run(net.addr_of(hub), hub.connect([net.addr_of(m)], net.now))
        else:
            net.run(net.addr_of(m), m.connect([net.addr_of(hub)], net.now))
        net.advance(5 / n)
    net.until(lambda: len(hub.routes.reachable()) == n, 30)   # (ourselves included)
    net.advance(3)
    return sent[net.addr_of(hub)], sum(m.counters["gossip_delta_gaps"] for m in net.meshes.values())


def test_a_star_join_costs_the_hub_o_n_per_joining_peer_without_gaps():
    (small, gaps_small), (big, gaps_big) = star_join(20), star_join(60)
    # Every spoke must get the hub's view (N entries): O(N) per joiner, O(N^2) for the join (9x for 3x N).
    assert big < 11 * small, (small, big)
    assert gaps_small == gaps_big == 0
