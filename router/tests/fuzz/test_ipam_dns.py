"""Fuzz: IPAM and DNS message decoders and merges. Only ProtocolError (and its RingConflict) escapes a
decoder; ring merges are idempotent and order-independent; DNS store merges commute and are idempotent;
the DNS answering function turns any bytes into bytes or None."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random

from hypothesis import given
from hypothesis import strategies as st

from weavenet.ipam import Allocator, Ring
from weavenet.ipam.ring import MAX_RING_ENTRIES
from weavenet.mesh.errors import ProtocolError
from weavenet.nameserver import RecordStore, answer
from weavenet.nameserver.store import MAX_RECORDS_PER_ORIGIN

NET = ipaddress.IPv4Network("10.32.0.0/24")
PEERS = [f"02:00:00:00:00:0{i}" for i in range(1, 5)]
US, OBSERVER = PEERS[0], "02:00:00:00:00:99"

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False,
                                                                                      allow_infinity=False) | \
    st.sampled_from(PEERS + ["10.32.0.0/24", "10.32.0.0", "10.32.0.7/32", "ring", "req", "nospace", "x"]) | \
    st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=5)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=5), max_leaves=25)


def fields(keys: list[str]):
    """Objects with the protocol's keys (values of any type), so decoding gets past the first check."""
    return st.fixed_dictionaries({}, optional={k: json_values for k in keys})


def ring_wire(entries=None) -> dict:
    return {"range": str(NET), "id": "r1", "removed": {},
            "entries": entries if entries is not None else [[str(NET.network_address), US, 1, 200]]}


def allocator() -> Allocator:
    a = Allocator(US, NET, rng=random.Random(1))
    a.peers_changed({PEERS[1]}, {PEERS[1], PEERS[2]}, 0)
    a.receive(json.dumps({"t": "ring", "from": PEERS[1], "ring": None}).encode(), 0, PEERS[1])
    a.allocate("c", None, 0)
    return a


ipam_messages = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    fields(["t", "from", "subnet", "ring", "seed"]).map(lambda v: json.dumps(v).encode()),
    st.builds(lambda t, frm, sub, r: json.dumps({"t": t, "from": frm, "subnet": sub, "ring": r}).encode(),
              st.sampled_from(["ring", "req", "nospace"]), st.sampled_from(PEERS[1:]),
              st.sampled_from(["10.32.0.0/24", "10.32.0.7/32", "10.32.0.128/25"]),
              st.one_of(st.booleans(), fields(["range", "id", "entries", "removed"]),
                        st.lists(st.tuples(st.sampled_from(["10.32.0.0", "10.32.0.9", "10.32.0.200"]),
                                           st.sampled_from(PEERS), st.integers(0, 2**54), st.integers(0, 300))
                                 .map(list), max_size=4).map(ring_wire))),
)


@given(st.lists(ipam_messages, min_size=1, max_size=6), st.sampled_from(PEERS[1:]))
def test_ipam_receive_raises_only_protocol_errors(messages, src):
    a = allocator()
    for data in messages:
        with contextlib.suppress(ProtocolError):
            a.receive(data, 1.0, src)
    assert len(a.ring.entries) <= MAX_RING_ENTRIES
    owned = sum(hi - lo for lo, hi in a.ring.owned_by(US))
    assert all(a.ring.owner_at(addr) == US for addr in a._used)  # we never lose what we allocated
    assert owned >= len(a._used)


@given(json_values | fields(["range", "id", "entries", "removed"]))
def test_ring_decoder_raises_only_protocol_errors(w):
    with contextlib.suppress(ProtocolError):
        Ring.from_wire(w, NET)


def history(seed: int, steps: int) -> list[Ring]:
    """Snapshots of one ring's life: A claims all, then owners donate parts of their ranges."""
    rng = random.Random(seed)
    ring = Ring(NET)
    ring.claim_all(PEERS[0], "r1")
    snaps = [Ring.from_wire(ring.to_wire(), NET)]
    for _ in range(steps):
        lo, hi, owner = rng.choice(ring.ranges())
        if rng.random() < 0.3:
            ring.set_free(lo, rng.randint(0, hi - lo))
        elif hi - lo > 1:
            cut = rng.randint(lo + 1, hi - 1)
            ring.transfer(cut, hi, rng.choice([p for p in PEERS if p != owner]), owner)
        snaps.append(Ring.from_wire(ring.to_wire(), NET))
    return snaps


@given(st.integers(0, 10_000), st.integers(1, 12), st.data())
def test_ring_merge_is_idempotent_and_order_independent(seed, steps, data):
    snaps = history(seed, steps)
    picks = data.draw(st.lists(st.sampled_from(snaps), min_size=1, max_size=5))
    results = []
    for order in (picks, list(reversed(picks))):
        r = Ring(NET)
        for s in order:
            r.merge(s, OBSERVER)
        wire = r.to_wire()
        assert r.merge(Ring.from_wire(wire, NET), OBSERVER) is False  # merging itself changes nothing
        for s in order:
            assert r.merge(s, OBSERVER) is False  # idempotent: everything again changes nothing
        results.append(r.to_wire())
    assert results[0] == results[1]
    newest = max(picks, key=lambda s: sum(e.version for e in s.entries.values()))
    assert results[0] == newest.to_wire()  # snapshots of one history: the merge is the latest


# --- DNS --------------------------------------------------------------------------------------------------
dns_messages = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    fields(["from", "origins", "records"]).map(lambda v: json.dumps(v).encode()),
    st.builds(lambda frm, origins, recs: json.dumps({"from": frm, "origins": origins, "records": recs}).encode(),
              st.sampled_from(PEERS), st.dictionaries(st.sampled_from(PEERS), json_values, max_size=3),
              st.lists(st.lists(json_scalars, min_size=7, max_size=7) | json_values, max_size=3)),
)


@given(st.lists(dns_messages, min_size=1, max_size=4))
def test_dns_merge_raises_only_protocol_errors(messages):
    s = RecordStore(OBSERVER, 1)
    for data in messages:
        with contextlib.suppress(ProtocolError):
            s.merge(data, 1.0, PEERS[0])
    assert all(len(k) <= MAX_RECORDS_PER_ORIGIN for k in s._by_origin.values())
    assert set(s.records) == {k for keys in s._by_origin.values() for k in keys}


ops = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["add", "remove", "restart"]),
                         st.sampled_from(["web", "db", "x"]), st.integers(1, 4), st.sampled_from(["c1", "c2"])),
               min_size=1, max_size=15)


@given(ops, st.randoms(use_true_random=False))
def test_dns_store_merge_commutes_and_is_idempotent(history_ops, rnd):
    stores = [RecordStore(p, 10) for p in PEERS[:3]]
    msgs = []
    for who, op, name, last, cid in history_ops:
        s = stores[who]
        if op == "add":
            changed = s.add(name, f"10.32.0.{last}", cid, 0)
        elif op == "remove":
            changed = s.remove_container(cid, 0)
        else:
            stores[who] = s = RecordStore(s.us, s.incarnation + 1)
            changed = None
        msgs.append((s.us, s.encode_gossip(changed)))
    finals = []
    for _ in range(3):
        order = msgs[:]
        rnd.shuffle(order)
        obs = RecordStore(OBSERVER, 10)
        for src, m in order + order:  # every message twice: idempotent
            obs.merge(m, 0.0, src)
        finals.append(obs.records)
    assert finals[0] == finals[1] == finals[2]
    assert finals[0] == {k: r for s in stores for k, r in s.records.items()}


@given(st.binary(max_size=600))
def test_dns_answer_never_raises(query):
    store = RecordStore(US, 1)
    store.add("web", "10.32.0.1", "c1", 0)
    out = answer(query, store, 0.0)
    assert out is None or isinstance(out, bytes)
