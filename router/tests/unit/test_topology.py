"""Gossiped topology: order-independent merge, ownership, wire decoding, adjacency, GC."""

import random

import pytest

from weavenet.mesh.errors import ProtocolError
from weavenet.mesh.topology import ConnRecord, PeerEntry, Topology

US = "02:00:00:00:00:00"


def name(i: int) -> str:
    return f"02:00:00:00:00:{i:02x}"


def conn(i: int, established: bool = True, outbound: bool = True) -> ConnRecord:
    return ConnRecord(name(i), f"10.0.0.{i}:6783", outbound, established)


def entry(i: int, inc: int = 1, ver: int = 1, conns=()) -> PeerEntry:
    return PeerEntry(name(i), f"n{i}", 1000 + i, inc, ver, tuple(conns))


def topo() -> Topology:
    return Topology(PeerEntry(US, "us", 1, 5, 1))


def test_wire_roundtrip():
    e = entry(3, 7, 9, [conn(4), conn(5, established=False, outbound=False)])
    assert e.to_wire() == [name(3), "n3", 1003, 7, 9, [[name(4), "10.0.0.4:6783", 1, 1],
                                                       [name(5), "10.0.0.5:6783", 0, 0]]]
    assert PeerEntry.from_wire(e.to_wire()) == e
    assert e.wire_json.startswith(b'["02:00:00:00:00:03","n3"')


def test_from_wire_normalises_names():
    w = [name(10).upper(), "x", 1, 1, 1, [[name(11).upper(), "a", 1, 0]]]
    e = PeerEntry.from_wire(w)
    assert e.name == name(10) and e.connections[0].name == name(11)
    assert e.connections[0].established is False


@pytest.mark.parametrize("seed", range(10))
def test_merge_is_order_independent(seed):
    rng = random.Random(seed)
    versions = [entry(p, inc, ver, [conn(ver % 7 + 1)]) for p in range(1, 6) for inc in (1, 2) for ver in range(4)]
    expected = {p: max((e for e in versions if e.name == name(p)), key=lambda e: e.order) for p in range(1, 6)}
    finals = []
    for _ in range(5):
        t = topo()
        shuffled = versions[:]
        rng.shuffle(shuffled)
        while shuffled:  # in random batches
            k = rng.randint(1, 6)
            t.merge(shuffled[:k])
            shuffled = shuffled[k:]
        finals.append(dict(t.peers))
    assert all(f == finals[0] for f in finals)
    assert finals[0] == {US: topo().ourself, **{name(p): e for p, e in expected.items()}}


def test_merge_returns_only_new_entries():
    t = topo()
    e1, e2 = entry(1, 1, 2), entry(2, 1, 1)
    assert t.merge([e1, e2]) == [e1, e2]
    assert t.merge([e1, e2]) == []  # same order again: nothing new
    e1b = entry(1, 1, 3)
    assert t.merge([e2, e1b]) == [e1b]


def test_never_goes_backwards():
    t = topo()
    t.merge([entry(1, 1, 5)])
    assert t.merge([entry(1, 1, 4), entry(1, 0, 99)]) == []
    assert t.peers[name(1)].order == (1, 5)


def test_higher_incarnation_with_lower_version_wins():
    t = topo()
    t.merge([entry(1, 1, 50)])
    restarted = entry(1, 2, 0)
    assert t.merge([restarted]) == [restarted]
    assert t.peers[name(1)] is restarted


def test_own_entry_never_overwritten_by_gossip():
    t = topo()
    me = t.ourself
    assert t.merge([PeerEntry(US, "impostor", 9, 5, 1)]) == []  # not newer: ignored
    assert t.ourself is me
    # Newer than ours (our previous life's, or forged): we keep our content and bump past it, and the
    # bumped entry is returned to be gossiped.
    (bumped,) = t.merge_wire([[US.upper(), "impostor", 9, 99, 99, []]])
    assert bumped is t.ourself and (bumped.name, bumped.nickname, bumped.uid) == (US, "us", 1)
    assert bumped.order == (99, 100) and t.reclaimed == 1
    assert t.merge_wire([[US, "impostor", 9, 99, 99, []]]) == []  # now older than ours


def test_set_ourself():
    t = topo()
    new = PeerEntry(US, "us", 1, 5, 2, (conn(1),))
    t.set_ourself(new)
    assert t.ourself is new and t.peers[US] is new


def test_garbage_collect_and_no_resurrection_of_old_entries():
    t = topo()
    t.merge([entry(1, 1, 3), entry(2), entry(3)])
    gone = t.garbage_collect({US, name(2)})
    assert sorted(gone) == [name(1), name(3)]
    assert set(t.peers) == {US, name(2)}
    assert t.garbage_collect(set()) == [name(2)]  # ourself is never collected
    assert set(t.peers) == {US}
    # A collected peer cannot come back with the same or an older entry, only with a newer one.
    assert t.merge([entry(1, 1, 3), entry(1, 1, 2)]) == []
    assert [e.order for e in t.merge([entry(1, 1, 4)])] == [(1, 4)]


def test_merge_wire_decodes_only_newer_entries(monkeypatch):
    t = topo()
    t.merge([entry(1, 1, 5)])
    decoded = []
    real = PeerEntry.from_wire.__func__

    def spy(cls, w, *args):
        decoded.append(w[0])
        return real(cls, w, *args)

    monkeypatch.setattr(PeerEntry, "from_wire", classmethod(spy))
    stale = [name(1), "n", 1, 1, 5, []]
    # Newer entries are decoded and merged; the stale one is not even decoded.
    fresh = [name(2), "n2", 2, 1, 1, [[name(1), "10.0.0.1:6783", 1, 1]]]
    accepted = t.merge_wire([stale, fresh])
    assert decoded == [name(2)]
    assert [e.name for e in accepted] == [name(2)]
    assert t.peers[name(2)].connections == (conn(1),)


@pytest.mark.parametrize(
    "w",
    [
        None,
        5,
        [],
        [name(1), "n", 1],
        [name(1), "n", 1, "x", 1, []],
        [name(1), "n", 1, 1, None, []],
        [name(1), "n", 1, 1, 1],  # no connections
        ["bogus", "n", 1, 1, 1, []],
        [name(1), "n", "uid?", 1, 1, []],
        [name(1), "n", 1, 1, 1, 7],
        [name(1), "n", 1, 1, 1, [["bogus", "a", 1, 1]]],
        [name(1), "n", 1, 1, 1, [[name(2)]]],
        [name(1), "n", 1, 1, 1, [], "extra"],
    ],
)
def test_merge_wire_rejects_malformed(w):
    t = topo()
    with pytest.raises(ProtocolError):
        t.merge_wire([w])
    assert set(t.peers) == {US}


BAD_TYPES = [
    pytest.param([123, "n", 1, 1, 1, []], id="int-name"),
    pytest.param([["x"], "n", 1, 1, 1, []], id="list-name"),
    pytest.param([name(1), "n", 1, 1, 1, [{}]], id="dict-conn"),
    pytest.param([name(1), "n", 1, 1, 1, [[5, "a", 1, 1]]], id="int-conn-name"),
    pytest.param([name(1), "n", 1, float("inf"), 1, []], id="inf-incarnation"),
]


@pytest.mark.parametrize("w", BAD_TYPES)
def test_merge_wire_rejects_wrong_types(w):
    with pytest.raises(ProtocolError):
        topo().merge_wire([w])


def test_symmetric_neighbours():
    t = topo()
    t.set_ourself(PeerEntry(US, "us", 1, 5, 2, (conn(1), conn(2), conn(3, established=False))))
    t.merge([
        entry(1, conns=[ConnRecord(US, "x", False, True), conn(2)]),
        entry(2, conns=[conn(1)]),  # 2 does not report us: one-sided
        entry(3, conns=[ConnRecord(US, "x", False, True)]),  # we report 3 as not established
        entry(4, conns=[conn(5)]),  # 5 is unknown
    ])
    assert t.symmetric_neighbours() == {
        US: [name(1)],
        name(1): [US, name(2)],
        name(2): [name(1)],
        name(3): [],
        name(4): [],
    }


def _brute_symmetric(t: Topology) -> dict[str, list[str]]:
    est = {n: {c.name for c in e.connections if c.established} for n, e in t.peers.items()}
    return {a: sorted(b for b in bs if a in est.get(b, ())) for a, bs in est.items()}


def test_symmetric_neighbours_kept_row_by_row_match_the_definition():
    """The rows are updated only where a stored or forgotten entry changes them: after every step of random
    merges (new peers, changed and dropped connections, peers that name unknown ones) and garbage
    collection, they equal adjacency computed from scratch, and a returned dict is never changed later."""
    rng = random.Random(7)
    t = topo()
    versions: dict[int, int] = {}
    for step in range(300):
        if step % 40 == 39:
            keep = set(rng.sample(sorted(t.peers), k=max(1, len(t.peers) // 2))) | {US}
            t.garbage_collect(keep)
            for i in [i for i in versions if name(i) not in keep]:
                del versions[i]
        else:
            i = rng.randrange(1, 25)
            versions[i] = versions.get(i, 0) + 1
            conns = [conn(j, established=rng.random() < 0.8) for j in rng.sample(range(1, 30), rng.randrange(0, 8))
                     if j != i]
            if rng.random() < 0.7:
                conns.append(ConnRecord(US, "x", False, rng.random() < 0.9))
            t.merge([entry(i, ver=versions[i], conns=conns)])
            if rng.random() < 0.3:
                ours = t.ourself
                mine = tuple(conn(j) for j in rng.sample(range(1, 25), rng.randrange(0, 10)))
                t.set_ourself(PeerEntry(US, "us", 1, 5, ours.version + 1, mine))
        before = t.symmetric_neighbours()
        snapshot = {a: list(b) for a, b in before.items()}
        assert before == _brute_symmetric(t), f"step {step}"
        t.symmetric_neighbours()
        assert before == snapshot


def test_symmetric_neighbours_sorted():
    t = topo()
    t.set_ourself(PeerEntry(US, "us", 1, 5, 2, tuple(conn(i) for i in (9, 3, 7))))
    t.merge([entry(i, conns=[ConnRecord(US, "x", False, True)]) for i in (7, 9, 3)])
    assert t.symmetric_neighbours()[US] == [name(3), name(7), name(9)]
