"""The ring CRDT: merge order-independence, idempotence, conflicts, wire decoding."""

import ipaddress
import itertools
import random

import pytest

from weavenet.ipam.ring import Entry, Ring, RingConflict
from weavenet.mesh.errors import ProtocolError

NET = ipaddress.IPv4Network("10.32.0.0/12")
A, B, C, D, X = (f"02:00:00:00:00:0{i}" for i in range(1, 6))
START = int(NET.network_address)


def fresh(owner: str = A) -> Ring:
    r = Ring(NET)
    r.claim_all(owner, "ring-1")
    return r


def copy(r: Ring) -> Ring:
    return Ring.from_wire(r.to_wire(), NET)


def histories() -> list[Ring]:
    """Copies of one ring at different points of its history: A donates to B and C, B to D."""
    a = fresh()
    snaps = [copy(a)]
    a.transfer(START + 2**19, START + 2**20, B, A)
    snaps.append(copy(a))
    a.set_free(START, 100)
    snaps.append(copy(a))
    a.transfer(START + 2**18, START + 2**19, C, A)
    snaps.append(copy(a))
    b = copy(a)
    b.transfer(START + 3 * 2**18, START + 2**20, D, B)
    snaps.append(copy(b))
    b.merge(a, B)
    return snaps


@pytest.mark.parametrize("seed", range(5))
def test_merge_is_order_independent_and_idempotent(seed):
    snaps = histories()
    expected = None
    for perm in itertools.islice(itertools.permutations(snaps), seed * 7, seed * 7 + 20):
        obs = Ring(NET)
        for s in perm:
            obs.merge(s, X)
        for s in perm:  # again: nothing changes
            assert obs.merge(s, X) is False
        if expected is None:
            expected = obs.to_wire()
        assert obs.to_wire() == expected
    owners = {o for _, _, o in Ring.from_wire(expected, NET).ranges()}
    assert owners == {A, B, C, D}


def test_merge_is_commutative_between_two_copies():
    snaps = histories()
    rng = random.Random(1)
    for _ in range(20):
        s1, s2 = rng.sample(snaps, 2)
        x, y = copy(s1), copy(s2)
        x.merge(s2, X)
        y.merge(s1, X)
        assert x.to_wire() == y.to_wire()


def test_ranges_cover_the_whole_range_once():
    r = histories()[-1]
    ranges = r.ranges()
    assert ranges[0][0] == START and ranges[-1][1] == START + NET.num_addresses
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    assert r.owner_at(START + 2**18 + 5) == C and r.owner_at(START - 1) is None


def test_adopt_when_we_have_none_and_empty_merges_change_nothing():
    r = Ring(NET)
    assert r.merge(Ring(NET), A) is False
    assert r.merge(fresh(), B) is True and r.ring_id == "ring-1"
    assert r.merge(Ring(NET), B) is False


def test_two_rings_created_apart_conflict():
    a, b = fresh(A), Ring(NET)
    b.claim_all(B, "ring-2")
    with pytest.raises(RingConflict, match="inconsistent rings"):
        a.merge(b, A)


def test_same_version_different_contents_conflict_and_leave_ours_unchanged():
    a = fresh(A)
    b = copy(a)
    b.entries[START] = Entry(B, 1, 5)
    before = a.to_wire()
    with pytest.raises(RingConflict, match="inconsistent entries"):
        a.merge(b, C)
    assert a.to_wire() == before


def test_someone_else_changing_or_splitting_our_range_conflicts():
    a = fresh(A)
    other = copy(a)
    other.entries[START] = Entry(B, 2, 0)  # moved our token without us
    with pytest.raises(RingConflict, match="rmpeer"):
        a.merge(other, A)
    split = copy(a)
    split._set(START + 10, Entry(B, 1, 0))
    with pytest.raises(RingConflict, match="split our range"):
        a.merge(split, A)


def test_different_ranges_conflict():
    other = Ring(ipaddress.IPv4Network("10.0.0.0/16"))
    other.claim_all(B, "x")
    with pytest.raises(RingConflict, match="range mismatch"):
        fresh().merge(other, A)


def test_take_over_records_tombstone_and_wins():
    r = histories()[-1]
    b_ranges = r.owned_by(B)
    taken = r.take_over(B, A)
    assert taken == b_ranges and not r.owned_by(B) and r.removed == {B: A}
    old = histories()[-1]
    old.merge(r, C)
    assert not old.owned_by(B) and old.removed == {B: A}


@pytest.mark.parametrize("bad", [
    {"range": "10.32.0.0/12", "id": "x", "entries": [], "removed": {}},
    {"range": "10.32.0.0/12", "id": "x", "entries": [["10.32.0.0", "nope", 1, 1]], "removed": {}},
    {"range": "10.32.0.0/12", "id": "x", "entries": [["10.32.0.0", A, -1, 1]], "removed": {}},
    {"range": "10.32.0.0/12", "id": "x", "entries": [["10.32.0.0", A, 1, 1], ["10.32.0.0", A, 1, 1]],
     "removed": {}},
    {"range": "10.32.0.0/12", "id": "x", "entries": [["11.0.0.0", A, 1, 1]], "removed": {}},
    {"range": "bogus", "id": "x", "entries": [], "removed": {}},
    {"id": "x"},
    [1, 2],
])
def test_malformed_wire_is_a_protocol_error(bad):
    with pytest.raises(ProtocolError):
        Ring.from_wire(bad, NET)


def test_our_own_later_write_that_we_forgot_is_taken_back():
    a = fresh(A)
    newer = copy(a)
    newer.set_free(START, 7)  # what we gossiped just before a crash that lost it
    assert a.merge(newer, A) is True and a.entries[START] == Entry(A, 2, 7)
