"""One allocator on its own: lowest free address, subnets, idempotence, claims, release, persistence, messages."""

import ipaddress
import json
import random

import pytest

from weavenet.ipam import Allocator, GossipChanged, SendTo, format_ipam_status
from weavenet.ipam.init import consensus
from weavenet.mesh.errors import ProtocolError

US, PEER = "02:00:00:00:00:01", "02:00:00:00:00:02"
JOINER = consensus(2)  # launched with one peer: cannot create the ring alone
IF = ipaddress.IPv4Interface
N = ipaddress.IPv4Network


def seeded(**kw) -> Allocator:
    return Allocator(US, rng=random.Random(1), **kw)


def test_lowest_free_address_skips_network_address_and_reuses_released():
    a = seeded()
    assert a.allocate("c1", None, 0)[0] == IF("10.32.0.1/12")
    assert a.allocate("c2", None, 0)[0] == IF("10.32.0.2/12")
    assert a.allocate("c1", None, 0)[0] == IF("10.32.0.1/12")  # idempotent
    assert a.release("c1", now=0)[0] == [ipaddress.IPv4Address("10.32.0.1")]
    assert a.allocate("c3", None, 0)[0] == IF("10.32.0.1/12")
    assert a.lookup("c2") == [IF("10.32.0.2/12")]


def test_subnets_exclude_their_network_and_broadcast_addresses():
    a = seeded()
    sub = N("10.40.1.0/30")
    assert [a.allocate(f"c{i}", sub, 0)[0] for i in range(2)] == [IF("10.40.1.1/30"), IF("10.40.1.2/30")]
    with pytest.raises(ValueError, match="no free address in 10.40.1.0/30"):
        a.allocate("c9", sub, 0)
    # One container, two subnets: one address in each, each returned again on repeat.
    assert a.allocate("c0", N("10.41.0.0/24"), 0)[0] == IF("10.41.0.1/24")
    assert a.allocate("c0", sub, 0)[0] == IF("10.40.1.1/30")
    assert a.lookup("c0") == [IF("10.40.1.1/30"), IF("10.41.0.1/24")]


def test_default_subnet_and_subnets_outside_the_range():
    a = seeded(default_subnet=N("10.33.0.0/16"))
    assert a.allocate("c", None, 0)[0] == IF("10.33.0.1/16")
    with pytest.raises(ValueError, match="not inside the allocation range"):
        a.allocate("c", N("192.168.0.0/24"), 0)
    with pytest.raises(ValueError, match="not inside"):
        Allocator(US, default_subnet=N("10.0.0.0/8"))


def test_claims_owned_foreign_outside_and_in_use():
    a = seeded()
    a.allocate("first", None, 0)  # creates the ring
    assert a.claim("c1", IF("10.32.0.5/12"), 0)[0] == "owned"
    assert a.claim("c1", IF("10.32.0.5/12"), 0)[0] == "owned"  # again: fine
    with pytest.raises(ValueError, match="already in use by container c1"):
        a.claim("c2", IF("10.32.0.5/12"), 0)
    assert a.claim("c2", IF("192.168.1.2/24"), 0)[0] == "outside"
    assert a.lookup("c2") == []
    b = Allocator(PEER, init=JOINER)  # no ring: nothing is ours
    assert b.claim("c", IF("10.32.0.9/12"), 0)[0] == "foreign"
    assert b.lookup("c") == [IF("10.32.0.9/12")]
    # Allocation skips claimed addresses.
    for i in range(2, 7):
        a.allocate(f"x{i}", None, 0)
    assert IF("10.32.0.5/12") not in [a.lookup(f"x{i}")[0] for i in range(2, 7)]


def test_release_one_address_or_all_and_cancel_pending():
    a = seeded()
    a.allocate("c", N("10.40.0.0/24"), 0)
    a.allocate("c", N("10.41.0.0/24"), 0)
    gone, _ = a.release("c", ipaddress.IPv4Address("10.41.0.1"), 0)
    assert gone == [ipaddress.IPv4Address("10.41.0.1")] and a.lookup("c") == [IF("10.40.0.1/24")]
    assert a.release("unknown", now=0) == ([], [])
    b = Allocator(PEER, init=JOINER)
    assert b.allocate("w", None, 0)[0] is None and b.pending == [("w", N("10.32.0.0/12"))]
    b.release("w", now=0)
    assert b.pending == []


def test_free_counts_are_published_in_the_ring():
    a = seeded()
    _, actions = a.allocate("c", None, 0)
    assert GossipChanged() in actions
    ring = json.loads(a.encode_gossip())["ring"]
    assert ring["entries"][0][3] == 2**20 - 2 - 1  # usable addresses minus the one in use
    assert a.owned_and_used() == [{"peer": US, "addresses": 2**20, "percent": 100.0, "used": 1}]


def test_persistence_round_trip_and_refusals():
    a = seeded()
    a.allocate("c1", None, 0)
    a.claim("c2", IF("10.32.1.1/24"), 0)
    text = a.to_json()
    b = Allocator.from_json(text, US)
    assert b.allocations() == {"c1": ["10.32.0.1/12"], "c2": ["10.32.1.1/24"]}
    assert b.allocate("c3", None, 0)[0] == IF("10.32.0.2/12")
    with pytest.raises(ValueError, match="belongs to peer"):
        Allocator.from_json(text, PEER)
    with pytest.raises(ValueError, match="weave reset"):
        Allocator.from_json(text, US, N("10.0.0.0/16"))
    with pytest.raises(ValueError, match="unreadable"):
        Allocator.from_json("{", US)


def test_request_without_ring_goes_to_reachable_peers_and_ring_holder_answers_with_ring():
    b = Allocator(PEER, init=JOINER)
    b.peers_changed({US}, {US}, 0)
    _, actions = b.allocate("c", None, 0)
    reqs = [x for x in actions if isinstance(x, SendTo) and b"req" in x.data]
    assert [x.peer for x in reqs] == [US]
    a = seeded()
    a.peers_changed({PEER}, {PEER}, 0)
    a.receive(b.encode_gossip(), 0)  # heard b: may seed now
    answer = a.receive(reqs[0].data, 0)
    assert not a.ring.empty
    ring_msgs = [x for x in answer if isinstance(x, SendTo) and x.peer == PEER]
    assert ring_msgs and b"ring" in ring_msgs[-1].data


def test_seed_waits_for_neighbours_state_before_claiming():
    a = seeded()
    a.peers_changed({PEER}, {PEER}, 0)
    assert a.allocate("c", None, 0)[0] is None and a.ring.empty
    out = a.receive(Allocator(PEER, init=JOINER).encode_gossip(), 0.5)  # the neighbour has no ring either
    assert not a.ring.empty and any(getattr(x, "container_id", None) == "c" for x in out)


@pytest.mark.parametrize("data", [b"nope", b"[]", b'{"t":"ring"}', b'{"t":"req","from":"02:00:00:00:00:02"}',
                                  b'{"t":"ring","from":"x","ring":null}'])
def test_malformed_messages_are_protocol_errors(data):
    with pytest.raises(ProtocolError):
        seeded().receive(data, 0)


def test_unknown_message_kinds_are_ignored():
    assert seeded().receive(b'{"t":"future","from":"02:00:00:00:00:02"}', 0) == []


def test_status_text():
    a = seeded()
    assert format_ipam_status(a.status(), US, {}, set()) == (
        "No address space claimed yet in 10.32.0.0/12\n"
        "Consensus: deferred (consensus=1, quorum 1): heard 0 other router(s)\n")
    a.allocate("c", None, 0)
    a.peers_changed({PEER}, {PEER}, 0)  # only a router the topology knows gets space
    a.receive(b'{"t":"req","from":"02:00:00:00:00:02","subnet":"10.32.0.0/12","ring":true}', 0)  # donates half
    a.peers_changed(set(), set(), 0)
    a.allocate("d", None, 0)
    text = format_ipam_status(a.status(), US, {US: "h1", PEER: "h2"}, set())
    assert text.splitlines() == [
        "02:00:00:00:00:01(h1)    524289 IPs ( 50.0% of total) (2 active)",
        "02:00:00:00:00:02(h2)    524287 IPs ( 50.0% of total) (0 active) - unreachable!",
    ]
