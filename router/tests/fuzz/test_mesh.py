"""Fuzz: the mesh's framing, channel and JSON decoders, topology decoding and merging, and whole
messages through Mesh.data_received. Only ProtocolError escapes a decoder; tables stay within their
caps; topology merges are idempotent and order-independent."""

from __future__ import annotations

import json
import random

from hypothesis import given
from hypothesis import strategies as st

from weavenet.mesh.channel import Channel, MsgType, decode_heartbeat, decode_json
from weavenet.mesh.core import Close, Mesh, MeshConfig
from weavenet.mesh.errors import ProtocolError
from weavenet.mesh.framing import FrameDecoder, encode_frame
from weavenet.mesh.handshake import LocalIdentity
from weavenet.mesh.topology import PeerEntry, Topology

US = "02:00:00:00:00:01"
PEERS = [f"02:00:00:00:00:0{i}" for i in range(2, 7)]
ADDRS = ["10.0.0.1:6783", "[fd00::1]:6783", "host.example", "10.0.0.2", "bad addr", "10.0.0.3:0", ""]

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(PEERS + ADDRS + [US])
                | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=6)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=30)

conn_records = st.lists(st.tuples(st.sampled_from(PEERS + [US]), st.sampled_from(ADDRS[:4]),
                                  st.sampled_from([0, 1]), st.sampled_from([0, 1])).map(list), max_size=4)
valid_entries = st.builds(lambda n, inc, ver, cs: [n, "nick", 7, inc, ver, cs], st.sampled_from(PEERS),
                          st.integers(0, 3), st.integers(0, 5), conn_records)


def mutate(entry: list, data) -> object:
    """A valid entry with one field (or one connection field) replaced by anything."""
    e = json.loads(json.dumps(entry))
    i = data.draw(st.integers(0, 6))
    value = data.draw(json_values)
    if i == 6 and e[5]:
        e[5][data.draw(st.integers(0, len(e[5]) - 1))][data.draw(st.integers(0, 3))] = value
    elif i < 6:
        e[i] = value
    else:
        e.append(value)
    return e


def topo(max_peers: int = 1000) -> Topology:
    return Topology(PeerEntry(US, "us", 1, 2, 1), max_peers)


@given(st.binary(max_size=300), st.integers(1, 20))
def test_frame_decoder_only_protocol_error(data, chunk):
    dec = FrameDecoder(max_frame=64)
    try:
        for i in range(0, len(data), chunk):
            for frame in dec.feed(data[i:i + chunk]):
                assert len(frame) <= 64
    except ProtocolError:
        pass


@given(st.lists(st.binary(max_size=50), max_size=5), st.binary(max_size=40))
def test_channel_roundtrip_then_garbage(bodies, garbage):
    tx, rx = Channel(None), Channel(None)
    stream = b"".join(tx.encode(MsgType.APP, b) for b in bodies)
    assert rx.feed(stream) == [(MsgType.APP, b) for b in bodies]
    try:
        for kind, body in rx.feed(garbage + encode_frame(garbage)):
            assert isinstance(kind, MsgType) and isinstance(body, bytes)
    except ProtocolError:
        pass


@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                 st.sampled_from([b"NaN", b"[Infinity]", b"[-Infinity]", b"[1e999]", b"[" * 1100, b"\xff"])))
def test_decode_json_and_heartbeat_only_protocol_error(body):
    for decode in (decode_json, decode_heartbeat):
        try:
            v = decode(body)
        except ProtocolError:
            continue
        json.dumps(v, allow_nan=False)  # raises if a NaN or infinity got through


@given(st.data())
def test_merge_wire_only_protocol_error_and_bounded(data):
    t = topo(max_peers=4)
    wire = data.draw(st.lists(st.one_of(valid_entries, valid_entries.flatmap(
        lambda e: st.just(e).map(lambda x: mutate(x, data))), json_values), max_size=6))
    try:
        accepted = t.merge_wire(wire, max_incarnation=10)
    except ProtocolError:
        return
    assert len(t.peers) <= 4 and len(t._seen) <= 2 * 4 + 64
    for e in accepted:
        assert isinstance(e, PeerEntry) and 0 <= e.incarnation <= 10
        assert all(c.address and ":" in c.address for c in e.connections)  # normalised addresses only
    assert t.ourself.name == US and t.ourself.nickname == "us"


def owner_entry(name: str, inc: int, ver: int) -> list:
    """What the owner would send: the content is a function of (name, incarnation, version), as it is
    for a real peer (merge keeps the greatest order; it does not arbitrate two contents of one order)."""
    rng = random.Random(f"{name}/{inc}/{ver}")
    others = [p for p in PEERS + [US] if p != name]
    conns = [[p, rng.choice(ADDRS[:4]), rng.randint(0, 1), rng.randint(0, 1)] for p in rng.sample(others, 2)]
    return [name, f"n{inc}.{ver}", 7, inc, ver, conns]


owner_entries = st.builds(owner_entry, st.sampled_from(PEERS), st.integers(0, 3), st.integers(0, 5))


@given(st.lists(owner_entries, max_size=12), st.randoms(use_true_random=False))
def test_merge_is_idempotent_and_commutative(entries, rnd):
    def state(t: Topology) -> dict:
        return {n: e.to_wire() for n, e in t.peers.items() if n != US}

    a, b = topo(), topo()
    a.merge_wire(entries)
    assert a.merge_wire(entries) == []  # idempotent: nothing new the second time
    shuffled = entries[:]
    rnd.shuffle(shuffled)
    while shuffled:  # another order, in random batches
        k = rnd.randint(1, 4)
        b.merge_wire(shuffled[:k])
        shuffled = shuffled[k:]
    assert state(a) == state(b)
    # The winner for each name is the entry with the highest (incarnation, version) among those sent.
    for n, w in state(a).items():
        best = max((x for x in entries if x[0] == n), key=lambda x: (x[3], x[4]))
        assert (w[3], w[4]) == (best[3], best[4])
    assert set(state(a)) == {x[0] for x in entries}


def _pair() -> tuple[Mesh, Mesh, int, int]:
    from tests.unit.meshsim import SimNet, full_mesh

    net = SimNet()
    a, b = net.add(1), net.add(2)
    net.run(net.addr_of(b), b.connect([net.addr_of(a)], net.now))
    net.until(lambda: full_mesh(net), 10)
    (ac,) = a.live_connections()
    (bc,) = b.live_connections()
    return a, b, ac.id, bc.id


@given(st.sampled_from([MsgType.GOSSIP, MsgType.SUMMARY, MsgType.APP, MsgType.HEARTBEAT]),
       st.one_of(st.binary(max_size=100), json_values.map(lambda v: json.dumps(v).encode()),
                 st.lists(valid_entries, max_size=3).map(lambda es: json.dumps({"peers": es}).encode()),
                 st.builds(lambda h, p: json.dumps(h).encode() + b"\n" + p,
                           st.lists(json_scalars, min_size=4, max_size=4), st.binary(max_size=10))))
def test_data_received_never_raises(kind, body):
    a, b, aid, bid = _pair()
    actions = a.data_received(aid, b.conns[bid].channel.encode(kind, body), 1000.5)
    if any(isinstance(x, Close) for x in actions):
        assert aid not in a.conns and sum(a.protocol_errors.values()) + a.counters["internal_errors"] >= 1
    a.tick(1001.0)


def test_mesh_config_default_caps():
    cfg = MeshConfig()
    assert cfg.max_peers >= 1000 and cfg.preauth_total < cfg.conn_limit
    assert Mesh(LocalIdentity(US, "us", 1, 6783), 1, cfg, random.Random(1)).topology.max_peers == cfg.max_peers
