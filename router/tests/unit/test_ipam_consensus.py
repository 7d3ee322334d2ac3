"""--ipalloc-init in memory: the Paxos agreement on the ring (any launch order, any peer mode, a member down,
partitions, lost messages), seed lists, observers, and hostile consensus messages."""

from __future__ import annotations

import ipaddress
import json
import random

import pytest

from weavenet.cli import main as cli
from weavenet.ipam import Allocator, format_ipam_status
from weavenet.ipam.init import OBSERVER, consensus, default_init, parse_init
from weavenet.ipam.paxos import Claims, Paxos, claims_from_wire, claims_to_wire
from weavenet.mesh.errors import ProtocolError

from .test_ipam_sim import RANGE, Sim, assert_distinct_in_range, assert_rings_agree, name


class Fleet(Sim):
    """The Sim, where a peer that is not running yet is not a neighbour (its link waits for it)."""

    def neighbours(self, n: str) -> set[str]:
        return {m for m in super().neighbours(n) if m in self.nodes}


def launch(sim: Sim, i: int, n: int, mode: str = "all", count: int | None = None) -> Allocator:
    """Router i of n as the collection launches it: all = every other host, chain = the hosts before it."""
    peers = [j for j in range(1, n + 1) if j != i] if mode == "all" else list(range(1, i))
    return sim.add(i, peers, init=consensus(count or n))


def allocate_each(sim: Sim, names: list[str], k: int, tag: str = "c") -> None:
    for j in range(k):
        for n in names:
            sim.allocate(n, f"{n}-{tag}{j}")


def ring_ids(sim: Sim) -> set:
    return {a.ring.ring_id for a in sim.nodes.values()}


# --- the whole fleet -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_all_mode_launched_at_once_every_router_allocates(seed):
    sim = Fleet(seed)
    names = [launch(sim, i, 3).us for i in (1, 2, 3)]
    allocate_each(sim, names, 5)  # before anyone has heard anyone
    sim.run(lambda: len(sim.done) == 15 and not sim.queue, 30)
    assert_distinct_in_range(sim.done.values())
    sim.run(timeout=15)
    assert_rings_agree(sim)
    assert len(ring_ids(sim)) == 1
    owners = {o for _, _, o in sim.nodes[names[0]].ring.ranges()}
    assert len(owners) >= 2  # split among the quorum (at least) that agreed, not claimed by one router


@pytest.mark.parametrize("mode", ["chain", "all"])
def test_reverse_launch_order(mode):
    sim = Fleet(4)
    c = launch(sim, 3, 3, mode)
    sim.allocate(c.us, "early")  # alone: 1 of 3 is no quorum, it waits
    sim.run(timeout=5)
    assert c.ring.empty and (c.us, "early") not in sim.done
    assert c.consensus_status()["state"] == "waiting"
    b = launch(sim, 2, 3, mode)
    sim.run(lambda: (c.us, "early") in sim.done, 15)  # 2 of 3 agree
    a = launch(sim, 1, 3, mode)
    for x in (a, b):
        sim.allocate(x.us, "late")
    sim.run(lambda: len(sim.done) == 3 and not sim.queue, 15)
    sim.run(timeout=15)
    assert_distinct_in_range(sim.done.values())
    assert_rings_agree(sim)


def test_first_host_down_at_deploy_time_joins_later():
    sim = Fleet(5)
    b, c = launch(sim, 2, 3, "chain"), launch(sim, 3, 3, "chain")  # host 1 is down
    allocate_each(sim, [b.us, c.us], 3)
    sim.run(lambda: len(sim.done) == 6, 20)
    assert b.ring.ring_id == c.ring.ring_id
    a = launch(sim, 1, 3, "chain")  # launched with no peers, but consensus=3: it must not create its own ring
    sim.allocate(a.us, "late")
    sim.run(lambda: (a.us, "late") in sim.done and not sim.queue, 20)
    sim.run(timeout=15)
    assert_distinct_in_range(sim.done.values())
    assert_rings_agree(sim)
    assert len(ring_ids(sim)) == 1


def test_partition_into_halves_creates_no_ring_then_one_when_healed():
    sim = Fleet(6)
    names = [sim.add(i, [], init=consensus(4)).us for i in (1, 2, 3, 4)]
    sim.links |= {frozenset((names[0], names[1])), frozenset((names[2], names[3]))}
    sim.topology_changed()
    allocate_each(sim, names, 1)
    sim.run(timeout=30)
    assert all(a.ring.empty for a in sim.nodes.values()) and not sim.done  # 2 of 4 is no quorum on either side
    sim.links.add(frozenset((names[1], names[2])))
    sim.topology_changed()
    sim.run(lambda: len(sim.done) == 4 and not sim.queue, 30)
    sim.run(timeout=15)
    assert_distinct_in_range(sim.done.values())
    assert_rings_agree(sim)


def test_partition_only_the_majority_creates_the_ring_and_the_minority_adopts_it():
    sim = Fleet(7)
    names = [sim.add(i, [], init=consensus(5)).us for i in range(1, 6)]
    big, small = names[:3], names[3:]
    sim.links |= {frozenset((big[0], big[1])), frozenset((big[1], big[2])), frozenset((small[0], small[1]))}
    sim.topology_changed()
    allocate_each(sim, names, 1)
    sim.run(timeout=30)
    assert all(not sim.nodes[n].ring.empty for n in big) and all(sim.nodes[n].ring.empty for n in small)
    sim.links.add(frozenset((big[2], small[0])))
    sim.topology_changed()
    sim.run(lambda: len(sim.done) == 5 and not sim.queue, 30)  # no RingConflict: there was only one ring
    sim.run(timeout=15)
    assert_rings_agree(sim)
    assert len(ring_ids(sim)) == 1


@pytest.mark.parametrize("seed", range(2))
def test_lost_and_duplicated_consensus_messages_still_agree(seed):
    sim = Fleet(seed, loss=0.2)
    names = [launch(sim, i, 5).us for i in range(1, 6)]
    allocate_each(sim, names, 2)
    sim.run(lambda: len(sim.done) == 10, 120)
    assert_distinct_in_range(sim.done.values())
    sim.run(lambda: len(ring_ids(sim)) == 1, 30)


@pytest.mark.parametrize("seed", range(5))
def test_chain_without_ipalloc_init_first_and_last_asking_at_once_make_one_ring(seed):
    """Defaults: the first host counts 1 (alone), the others 2: the largest N heard sets everyone's quorum."""
    sim = Fleet(seed)
    names = [sim.add(i, list(range(1, i))).us for i in (1, 2, 3)]
    sim.run(lambda: all(len(a._heard) == len(a._connected) for a in sim.nodes.values()), 5)
    sim.allocate(names[2], "c")
    sim.allocate(names[0], "c")
    sim.run(lambda: len(sim.done) == 2 and not sim.queue, 20)
    assert len(ring_ids(sim)) == 1


def test_observers_never_create_the_ring():
    sim = Fleet(8)
    a, b = sim.add(1, [], init=OBSERVER), sim.add(2, [1], init=OBSERVER)
    allocate_each(sim, [a.us, b.us], 1)
    sim.run(timeout=20)
    assert a.ring.empty and b.ring.empty and not sim.done
    assert a.consensus_status() == {"state": "observer"}
    c = sim.add(3, [2], init=consensus(1))
    sim.run(lambda: len(sim.done) == 2 and not sim.queue, 20)
    assert c.ring.ring_id.startswith(c.us)  # created by the one router that takes part
    assert_distinct_in_range(sim.done.values())


def test_default_is_consensus_among_the_peers_given_and_a_router_alone_allocates_at_once():
    assert default_init(0) == consensus(1) and default_init(2) == consensus(3)
    a = Allocator(name(1), init=default_init(0))
    addr, _ = a.allocate("c", None, 0.0)  # the README tutorial: weave launch, then weave run
    assert addr == ipaddress.IPv4Interface("10.32.0.1/12")
    assert a.consensus_status() == {"state": "achieved"}


def test_seed_list_builds_the_same_ring_everywhere_without_a_message():
    init = parse_init(f"seed={name(2)},{name(1)}")
    assert str(init) == f"seed={name(1)},{name(2)}"
    sim = Fleet(9)
    a, b = sim.add(1, [], init=init), sim.add(2, [], init=init)
    assert a.ring.to_wire() == b.ring.to_wire() and a.ring.owned_by(a.us) and a.ring.owned_by(b.us)
    for x in (a, b):
        addr, _ = x.allocate("c", None, 0.0)
        assert addr is not None and x.ring.owner_at(int(addr.ip)) == x.us
    c = sim.add(3, [1, 2], init=init)  # not in the list: gets space from the seeds
    sim.links |= {frozenset((a.us, b.us))}
    sim.topology_changed()
    sim.allocate(c.us, "c")
    sim.run(lambda: (c.us, "c") in sim.done and not sim.queue, 15)
    assert c.ring.ring_id == a.ring.ring_id


def test_a_promise_survives_a_restart():
    sim = Fleet(10)
    a, b = launch(sim, 1, 3), launch(sim, 2, 3)
    sim.links.discard(frozenset((a.us, b.us)))
    sim.topology_changed()
    sim.allocate(a.us, "c")  # a proposes; nobody hears it
    ours = a.paxos.ours
    assert ours.promise[0] >= 1
    back = Allocator.from_json(a.to_json(), a.us, RANGE, init=consensus(3))
    assert back.paxos.ours == ours


def test_status_says_how_far_the_agreement_got():
    sim = Fleet(11)
    a = launch(sim, 1, 3)
    sim.allocate(a.us, "c")
    st = a.status()
    assert st["init"] == "consensus=3" and st["consensus"]["state"] == "waiting" and st["consensus"]["quorum"] == 2
    text = format_ipam_status(st, a.us, {}, set())
    assert "No address space claimed yet" in text and "Consensus: waiting (consensus=3, quorum 2)" in text
    launch(sim, 2, 3)
    sim.run(lambda: not a.ring.empty, 10)
    assert a.status()["consensus"] == {"state": "achieved"}


def test_ipalloc_init_flag_is_validated_with_the_flag_named():
    def parse(*argv):
        return cli._config_from(cli.build_parser().parse_args(["launch", *argv]))[0]

    assert parse("--ipalloc-init", "consensus=3").ipalloc_init == "consensus=3"
    assert parse("--ipalloc-init", "seed=02:00:00:00:00:0B,02:00:00:00:00:0a").ipalloc_init == \
        "seed=02:00:00:00:00:0a,02:00:00:00:00:0b"
    for bad in ("consensus=0", "consensus=x", "consensus=99999", "seed=", "seed=host1", "observer=1", "paxos"):
        with pytest.raises(ValueError, match=r"^invalid --ipalloc-init"):
            parse("--ipalloc-init", bad)


# --- the agreement itself ------------------------------------------------------------------------------

def test_paxos_three_proposers_at_once_decide_one_value():
    names = [name(i) for i in (1, 2, 3)]
    nodes = {n: Paxos(n, 3, random.Random(i)) for i, n in enumerate(names)}
    for p in nodes.values():
        p.propose()
    for _ in range(6):  # every router sends its claims to every other, in rounds
        wires = {n: claims_to_wire(p.ours) for n, p in nodes.items()}
        for n, p in nodes.items():
            for m, w in wires.items():
                if m != n:
                    assert p.update(m, claims_from_wire(w), 3) is None
            p.think()
    decided = {n: p.decided() for n, p in nodes.items()}
    assert None not in decided.values() and len(set(decided.values())) == 1
    ballot, value = decided[names[0]]
    assert ballot == (1, names[2])  # the highest of the three first ballots won; nobody proposed again


def test_paxos_no_quorum_no_decision():
    p = Paxos(name(1), 3)
    p.propose()
    assert p.decided() is None and p.ours.accepted == (0, "")


# --- hostile consensus messages --------------------------------------------------------------------------

def joined(count: int = 3) -> Allocator:
    a = Allocator(name(1), init=consensus(count))
    a.peers_changed({name(2), name(3)}, {name(2), name(3)}, 0.0)
    return a


def msg(frm: str, claims: object, n: object = 3) -> bytes:
    """A consensus message (`n`: the sender's consensus=N)."""
    return json.dumps({"t": "paxos", "from": frm, "n": n, "claims": claims}).encode()


def ballot(r, who):
    return [r, who]


VALUE = {"peers": [name(2)], "nonce": 7}


@pytest.mark.parametrize("claims, n", [
    ("x", 3), ([], 3), ({"promise": "1"}, 3), ({"promise": [True, name(2)]}, 3), ({"promise": [-1, name(2)]}, 3),
    ({"promise": [0, name(2)]}, 3), ({"promise": [1, "nobody"]}, 3), ({"promise": [1]}, 3),
    ({"promise": [2 ** 60, name(2)]}, 3), ({"promise": [1.5, name(2)]}, 3),
    ({"promise": [1, name(2)], "accepted": [2, name(2)], "value": VALUE}, 3),        # accepted above its promise
    ({"promise": [1, name(2)], "value": VALUE}, 3),                                  # a value without a ballot
    ({"promise": [1, name(2)], "accepted": [1, name(2)]}, 3),                        # a ballot without a value
    ({"promise": [1, name(2)], "accepted": [1, name(2)], "value": {"peers": [], "nonce": 1}}, 3),
    ({"promise": [1, name(2)], "accepted": [1, name(2)], "value": {"peers": [name(3), name(2)], "nonce": 1}}, 3),
    ({"promise": [1, name(2)], "accepted": [1, name(2)], "value": {"peers": [name(2)] * 2, "nonce": 1}}, 3),
    ({"promise": [1, name(2)], "accepted": [1, name(2)], "value": {"peers": [name(2)], "nonce": 2 ** 32}}, 3),
    ({"promise": [1, name(2)], "accepted": [1, name(2)],
      "value": {"peers": [f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(1, 1026)], "nonce": 1}}, 3),
    ({"promise": [1, name(2)]}, 0), ({"promise": [1, name(2)]}, 10 ** 9), ({"promise": [1, name(2)]}, "3"),
])
def test_malformed_claims_are_protocol_errors(claims, n):
    a = joined()
    with pytest.raises(ProtocolError):
        a.receive(msg(name(2), claims, n), 0.0, name(2))
    assert a.ring.empty and a.paxos.ours == Claims()


def test_claims_for_another_router_are_refused():
    a = joined()
    assert a.receive(msg(name(3), {"promise": ballot(1, name(3))}), 0.0, name(2)) == []
    assert a.refused == {"forged_sender": 1} and name(3) not in a.paxos.knows


def test_forged_proposer_cannot_make_a_ring():
    """B says it accepted a ballot of A's with a value A never proposed: nobody accepts or counts it."""
    a = joined(count=2)  # quorum 2: B's acceptance and ours would be enough if it were counted
    forged = {"promise": ballot(1, name(3)), "accepted": ballot(1, name(3)), "value": VALUE}
    a.receive(msg(name(2), forged), 0.0, name(2))
    assert a.ring.empty and a.paxos.ours.accepted == (0, "") and a.paxos.decided() is None


def test_a_proposer_cannot_change_its_value():
    a = joined(count=5)  # (with 3, B's acceptance and ours would already decide)
    real = {"promise": ballot(1, name(2)), "accepted": ballot(1, name(2)), "value": VALUE}
    a.receive(msg(name(2), real), 0.0, name(2))
    other = dict(real, value={"peers": [name(2), name(3)], "nonce": 8})
    a.receive(msg(name(2), other), 0.1, name(2))
    assert a.refused == {"value_changed": 1}


def test_huge_rounds_are_refused_not_followed():
    a = joined()
    a.receive(msg(name(2), {"promise": ballot(10 ** 9, name(2))}), 0.0, name(2))
    assert a.refused == {"round_jump": 1} and a.paxos.ours.promise == (0, "")
    a.receive(msg(name(2), {"promise": ballot(5, name(2))}), 0.0, name(2))  # a plausible one is followed
    assert a.paxos.ours.promise == (5, name(2))


def test_claims_from_a_router_that_does_not_exist_are_refused():
    a = joined()
    a.receive(msg(name(9), {"promise": ballot(1, name(9))}), 0.0, name(9))
    assert a.refused == {"unknown_sender": 1} and name(9) not in a.paxos.knows


def test_a_router_with_a_ring_answers_claims_with_it_not_too_often():
    a = Allocator(name(1))
    a.peers_changed({name(2)}, {name(2)}, 0.0)
    a.receive(Allocator(name(2), init=consensus(2)).encode_gossip(), 0.0, name(2))
    a.allocate("c", None, 0.0)
    assert not a.ring.empty
    first = a.receive(msg(name(2), {"promise": ballot(1, name(2))}), 0.0, name(2))
    assert [x.peer for x in first] == [name(2)] and b'"t":"ring"' in first[0].data
    assert a.receive(msg(name(2), {"promise": ballot(1, name(2))}), 0.5, name(2)) == []
