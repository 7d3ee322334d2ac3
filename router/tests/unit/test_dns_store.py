"""The gossiped record store: tombstones, re-adds, restarts, gone peers, merge order, GC, names."""

import itertools
import json
import random

import pytest

from weavenet.mesh.errors import ProtocolError
from weavenet.nameserver import RecordStore, qualify

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"


def test_qualify_names_into_the_domain():
    assert qualify("Web") == "web.weave.local."
    assert qualify("web.weave.local") == "web.weave.local."
    assert qualify("a.b.weave.local.") == "a.b.weave.local."
    assert qualify("x", "example.org") == "x.example.org."
    for bad in ("", "weave.local", "web.example.com", "-x", "a..weave.local", "x" * 64):
        with pytest.raises(ValueError, match="expected a host name in the domain weave.local."):
            qualify(bad)


def test_add_lookup_reverse_and_idempotent_add():
    s = RecordStore(A, 1)
    assert len(s.add("web", "10.32.0.2", "c1", 0)) == 1
    assert s.add("web", "10.32.0.2", "c1", 0) == []
    s.add("web", "10.32.0.10", "c2", 0)
    s.add("db", "10.32.0.2", "c1", 0)
    assert s.lookup("WEB.weave.local.") == ["10.32.0.2", "10.32.0.10"]
    assert s.reverse("10.32.0.2") == ["db.weave.local.", "web.weave.local."]
    with pytest.raises(ValueError):
        s.add("web", "not-an-ip", "c3", 0)


def test_changes_propagate_and_removal_leaves_tombstones():
    a, b = RecordStore(A, 1), RecordStore(B, 1)
    b.merge(a.encode_gossip(a.add("web", "10.32.0.2", "c1", 0)), 0)
    assert b.lookup("web.weave.local.") == ["10.32.0.2"]
    old_add = a.encode_gossip()
    removed = a.remove_container("c1", 1)
    assert [r.tombstone for r in removed] == [True]
    assert [r.tombstone for r in b.merge(a.encode_gossip(removed), 1)] == [True]
    assert b.lookup("web.weave.local.") == []
    assert b.merge(old_add, 2) == []  # a late old add does not resurrect the name
    assert b.lookup("web.weave.local.") == []


def test_tombstone_wins_over_older_add_and_readd_wins_over_tombstone_in_any_order():
    a = RecordStore(A, 1)
    add1 = a.encode_gossip(a.add("web", "10.32.0.2", "c1", 0))
    tomb = a.encode_gossip(a.remove("c1", 1, address="10.32.0.2"))
    add2 = a.encode_gossip(a.add("web", "10.32.0.2", "c1", 2))
    for order in itertools.permutations([add1, tomb]):
        s = RecordStore(C, 1)
        for m in order:
            s.merge(m, 3)
        assert s.lookup("web.weave.local.") == []
    for order in itertools.permutations([add1, tomb, add2]):
        s = RecordStore(C, 1)
        for m in order:
            s.merge(m, 3)
        assert s.lookup("web.weave.local.") == ["10.32.0.2"]


@pytest.mark.parametrize("seed", range(5))
def test_merge_is_commutative_and_idempotent(seed):
    rng = random.Random(seed)
    a, b = RecordStore(A, 1), RecordStore(B, 7)
    msgs = []
    for i in range(30):
        st = rng.choice([a, b])
        cid = f"c{rng.randint(0, 5)}"
        if rng.random() < 0.6:
            changed = st.add(f"n{rng.randint(0, 3)}", f"10.32.0.{rng.randint(1, 9)}", cid, i)
        else:
            changed = st.remove_container(cid, i)
        if changed:
            msgs.append(st.encode_gossip(changed))
    finals = []
    for _ in range(4):
        s = RecordStore(C, 1)
        shuffled = msgs[:]
        rng.shuffle(shuffled)
        for m in shuffled + shuffled:
            s.merge(m, 100)
        finals.append(dict(s.records))
    assert all(f == finals[0] for f in finals)
    truth = {k: r for st in (a, b) for k, r in st.records.items()}
    assert finals[0] == truth


def test_restarted_origin_drops_its_previous_life_everywhere():
    a1, b = RecordStore(A, 1), RecordStore(B, 1)
    b.merge(a1.encode_gossip(a1.add("old", "10.32.0.2", "c1", 0) + a1.add("kept", "10.32.0.3", "c2", 0)), 0)
    a2 = RecordStore(A, 2)  # restarted: re-registers only the container still running
    a2.add("kept", "10.32.0.3", "c2", 5)
    changed = b.merge(a2.encode_gossip(), 5)
    assert b.lookup("old.weave.local.") == [] and b.lookup("kept.weave.local.") == ["10.32.0.3"]
    assert any(r.tombstone and r.name == "old.weave.local." for r in changed)  # so b gossips it on
    c = RecordStore(C, 1)
    c.merge(a1.encode_gossip(), 0)
    c.merge(b.encode_gossip(changed), 6)  # the delta carries a's new incarnation
    assert c.lookup("old.weave.local.") == []
    assert b.merge(a1.encode_gossip(), 7) == []  # the previous life's gossip, late: ignored


def test_nobody_else_speaks_for_our_records():
    a, b = RecordStore(A, 1), RecordStore(B, 1)
    a.add("x", "10.32.0.2", "c", 0)
    forged = json.loads(a.encode_gossip())
    forged["records"][0][5] = 99
    forged["records"][0][6] = 1
    assert a.merge(json.dumps(forged).encode(), 1) == []
    assert a.lookup("x.weave.local.") == ["10.32.0.2"]
    b.merge(json.dumps(forged).encode(), 1)
    assert b.lookup("x.weave.local.") == []


def test_peer_gone_drops_its_records_until_it_speaks_again():
    a, b, c = RecordStore(A, 1), RecordStore(B, 1), RecordStore(C, 1)
    msg = a.encode_gossip(a.add("x", "10.32.0.2", "c", 0))
    b.merge(msg, 0)
    c.merge(msg, 0)
    assert b.peer_gone(A) == 1 and b.lookup("x.weave.local.") == []
    assert b.merge(c.encode_gossip(), 1) == []  # a third router's stale copy does not bring it back
    assert b.lookup("x.weave.local.") == []
    b.merge(a.encode_gossip(), 2)  # a itself is back
    assert b.lookup("x.weave.local.") == ["10.32.0.2"]
    b.peer_gone(A)
    b.peer_back(A)
    b.merge(c.encode_gossip(), 3)
    assert b.lookup("x.weave.local.") == ["10.32.0.2"]


def test_remove_by_address_or_name_and_gc_of_tombstones():
    a = RecordStore(A, 1)
    a.add("x", "10.32.0.2", "c", 0)
    a.add("x", "10.32.0.3", "c", 0)
    a.add("y", "10.32.0.3", "c", 0)
    assert len(a.remove("c", 1, address="10.32.0.3", name="x")) == 1
    assert a.lookup("x.weave.local.") == ["10.32.0.2"] and a.lookup("y.weave.local.") == ["10.32.0.3"]
    assert len(a.remove("c", 2, address="10.32.0.3")) == 1
    assert [r.name for r in a.container_names("c")] == ["x.weave.local."]
    assert a.gc(100, max_age=600) == 0
    assert a.gc(603, max_age=600) == 2
    assert len(a.records) == 1


@pytest.mark.parametrize("data", [b"x", b"[]", b'{"from":"02:00:00:00:00:0a","origins":{},"records":[[1]]}',
                                  b'{"from":"nope","origins":{},"records":[]}',
                                  b'{"from":"02:00:00:00:00:0a","origins":{},"records":'
                                  b'[["x.weave.local.","bogus","c","02:00:00:00:00:0a",1,1,0]]}'])
def test_malformed_gossip_is_a_protocol_error(data):
    with pytest.raises(ProtocolError):
        RecordStore(B, 1).merge(data, 0)


def test_indexes_agree_with_the_records_after_churn():
    rng = random.Random(3)
    a, b = RecordStore(A, 1), RecordStore(B, 1)
    for i in range(200):
        cid, name, addr = f"c{rng.randint(0, 9)}", f"n{rng.randint(0, 4)}", f"10.32.0.{rng.randint(1, 6)}"
        op = rng.random()
        if op < 0.5:
            b.merge(a.encode_gossip(a.add(name, addr, cid, i)), i)
        elif op < 0.8:
            b.merge(a.encode_gossip(a.remove_container(cid, i)), i)
        elif op < 0.9:
            b.gc(i, max_age=5)
        elif op < 0.95:  # a restarts with nothing
            a = RecordStore(A, 1 + i)
            b.merge(a.encode_gossip(), i)
        else:
            b.peer_gone(A)
    for s in (a, b):
        for n in range(5):
            fq = f"n{n}.weave.local."
            assert s.lookup(fq) == sorted({r.address for r in s.live() if r.name == fq},
                                          key=lambda x: tuple(map(int, x.split("."))))
        for k in range(1, 7):
            assert s.reverse(f"10.32.0.{k}") == sorted({r.name for r in s.live() if r.address == f"10.32.0.{k}"})
