"""Many allocators in memory: chain start-up, concurrent allocation, donation, partitions, restart, rmpeer."""

from __future__ import annotations

import ipaddress
import random

import pytest

from weavenet.ipam import Allocated, Allocator, AllocFailed, ClaimRefused, GossipChanged, RingConflict, SendTo
from weavenet.ipam.allocator import GOSSIP_INTERVAL
from weavenet.ipam.init import default_init
from weavenet.mesh.gossip import Gossiper, GossipSend

RANGE = ipaddress.IPv4Network("10.32.0.0/12")


def name(i: int) -> str:
    return f"02:00:00:00:01:{i:02x}"


class Ring:
    """An allocator as a channel of the gossip layer (messages themselves are delivered by the Sim)."""

    def __init__(self, nodes: dict[str, Allocator], name: str) -> None:
        self.nodes, self.name = nodes, name   # (looked up each time: a test may restart the router)

    def full_state(self) -> bytes:
        return self.nodes[self.name].encode_gossip()

    def merge(self, src: str, payload: bytes, now: float) -> None:
        raise AssertionError("the Sim delivers to Allocator.receive")


class Sim:
    """Routers joined by links; messages are delivered in a (seeded) random order, time in 0.1 s steps.
    Each router's real gossip layer sends its ring to new neighbours and, now and then, to a random one."""

    def __init__(self, seed: int = 0, network: ipaddress.IPv4Network = RANGE, loss: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.loss = loss  # share of messages lost, and as many delivered twice
        self.network = network
        self.now = 0.0
        self.nodes: dict[str, Allocator] = {}
        self.gossip: dict[str, Gossiper] = {}
        self.links: set[frozenset[str]] = set()
        self.queue: list[tuple[str, str, bytes]] = []  # (src, dst, data)
        self.done: dict[tuple[str, str], ipaddress.IPv4Interface] = {}  # (router, container) -> address
        self.failed: list[AllocFailed] = []
        self.refused: list[ClaimRefused] = []

    def add(self, i: int, peers: list[int] = (), **kw) -> Allocator:
        kw.setdefault("init", default_init(len(peers)))
        a = Allocator(name(i), self.network, rng=random.Random(i), **kw)
        self.nodes[a.us] = a
        self.gossip[a.us] = g = Gossiper(random.Random(i))
        g.register("ipam", Ring(self.nodes, a.us), GOSSIP_INTERVAL)
        for p in peers:
            self.links.add(frozenset((a.us, name(p))))
        self.topology_changed()
        return a

    def neighbours(self, n: str) -> set[str]:
        return {m for link in self.links if n in link for m in link if m != n}

    def component(self, n: str) -> set[str]:
        seen, todo = {n}, [n]
        while todo:
            for m in self.neighbours(todo.pop()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen - {n}

    def topology_changed(self) -> None:
        for n, a in self.nodes.items():
            self.apply(n, self.gossip[n].neighbours_changed(frozenset(self.neighbours(n)), self.now))
            self.apply(n, a.peers_changed(self.neighbours(n), self.component(n), self.now))

    def cut(self, x: str, y: str) -> None:
        self.links.discard(frozenset((x, y)))
        self.topology_changed()

    def apply(self, src: str, actions) -> None:
        for act in actions:
            if isinstance(act, SendTo | GossipSend) and getattr(act, "dest", 0) is not None:
                peer, data = (act.peer, act.data) if isinstance(act, SendTo) else (act.dest, act.payload)
                if peer in self.component(src):
                    self.queue.append((src, peer, data))
            elif isinstance(act, GossipChanged):
                data = self.nodes[src].encode_gossip()
                self.queue += [(src, m, data) for m in self.neighbours(src)]
            elif isinstance(act, Allocated):
                self.done[(src, act.container_id)] = act.address
            elif isinstance(act, AllocFailed):
                self.failed.append(act)
            elif isinstance(act, ClaimRefused):
                self.refused.append(act)

    def allocate(self, n: str, cid: str, subnet=None) -> None:
        addr, actions = self.nodes[n].allocate(cid, subnet, self.now)
        if addr is not None:
            self.done[(n, cid)] = addr
        self.apply(n, actions)

    def step(self) -> None:
        batch, self.queue = self.queue, []
        if self.loss:
            batch = [m for m in batch if self.rng.random() >= self.loss]
            batch += [m for m in batch if self.rng.random() < self.loss]
        self.rng.shuffle(batch)
        for src, dst, data in batch:
            if dst in self.nodes:
                self.apply(dst, self.nodes[dst].receive(data, self.now, src))
        self.now += 0.1
        if round(self.now * 10) % 10 == 0:
            for n, a in self.nodes.items():
                self.apply(n, a.tick(self.now) + self.gossip[n].tick(self.now))

    def run(self, until=None, timeout: float = 60.0) -> float:
        start = self.now
        while self.now - start < timeout:
            if until is not None and until():
                return self.now - start
            self.step()
        if until is not None:
            raise AssertionError(f"not reached in {timeout}s")
        return timeout

    def pending(self) -> int:
        return sum(len(a.pending) for a in self.nodes.values())


def chain(sim: Sim, n: int) -> list[str]:
    for i in range(1, n + 1):
        sim.add(i, [i - 1] if i > 1 else [])
        sim.step()
    return [name(i) for i in range(1, n + 1)]


def assert_distinct_in_range(addrs, net=RANGE) -> None:
    addrs = list(addrs)
    assert len({a.ip for a in addrs}) == len(addrs)
    for a in addrs:
        assert a.ip in net and a.ip not in (net.network_address, net.broadcast_address)


def assert_rings_agree(sim: Sim) -> None:
    wires = [a.ring.to_wire() for a in sim.nodes.values()]
    assert all(w == wires[0] for w in wires)
    owned = sum(lo_hi[1] - lo_hi[0] for a in sim.nodes.values() for lo_hi in a.ring.owned_by(a.us))
    assert owned == RANGE.num_addresses  # every address has exactly one owner
    assert all(not a.refused for a in sim.nodes.values())  # honest routers never trip the hostile-input rules


@pytest.mark.parametrize("seed", range(3))
def test_chain_of_three_allocates_20_each_concurrently(seed):
    sim = Sim(seed)
    names = chain(sim, 3)
    for i in range(20):
        for n in names:
            sim.allocate(n, f"{n}-c{i}")
    sim.run(lambda: len(sim.done) == 60 and not sim.queue, timeout=30)
    assert_distinct_in_range(sim.done.values())
    assert all(sum(1 for (n, _) in sim.done if n == m) == 20 for m in names)
    sim.run(timeout=15)  # anti-entropy settles the hints too
    assert_rings_agree(sim)


def test_chain_of_twenty_all_allocate():
    sim = Sim(7)
    names = chain(sim, 20)
    for n in names:
        for i in range(3):
            sim.allocate(n, f"{n}-c{i}")
    took = sim.run(lambda: len(sim.done) == 60, timeout=60)
    assert took < 20
    assert_distinct_in_range(sim.done.values())
    sim.run(timeout=15)
    assert_rings_agree(sim)
    shares = {p["peer"]: p for p in sim.nodes[names[0]].owned_and_used()}
    assert set(shares) == set(names)
    assert sum(p["addresses"] for p in shares.values()) == RANGE.num_addresses
    assert all(p["used"] == 3 for p in shares.values())


def test_seed_allocates_alone_before_anyone_joins():
    sim = Sim()
    a = sim.add(1)
    sim.allocate(a.us, "c")
    assert sim.done[(a.us, "c")] == ipaddress.IPv4Interface("10.32.0.1/12")
    b = sim.add(2, [1])
    sim.allocate(b.us, "d")
    sim.run(lambda: (b.us, "d") in sim.done, 5)
    assert_distinct_in_range(sim.done.values())


def test_peer_launched_with_peers_never_claims():
    sim = Sim()
    b = sim.add(2, [1])  # its peer 1 is not there
    addr, _ = b.allocate("c", None, 0.0)
    assert addr is None and b.ring.empty
    sim.run(timeout=10)
    assert b.ring.empty and b.pending == [("c", RANGE)]


def test_nobody_has_a_ring_yet_the_seed_creates_it_on_request():
    sim = Sim()
    names = chain(sim, 3)
    sim.allocate(names[2], "c")  # the last of the chain asks first
    sim.run(lambda: (names[2], "c") in sim.done, 10)
    assert not sim.nodes[names[0]].ring.empty
    assert sim.nodes[names[2]].ring.owner_at(int(sim.done[(names[2], "c")].ip)) == names[2]


def test_donation_when_running_short_in_a_small_range():
    net = ipaddress.IPv4Network("10.9.0.0/27")  # 30 usable addresses
    sim = Sim(3, net)
    a = sim.add(1)
    b = sim.add(2, [1])
    sim.step()
    for i in range(10):
        sim.allocate(a.us, f"a{i}")
    for i in range(20):
        sim.allocate(b.us, f"b{i}")
    sim.run(lambda: len(sim.done) == 30 and not sim.queue, 30)
    assert_distinct_in_range(sim.done.values(), net)
    for x in (a, b):  # the ring says every address is used: refused at once
        with pytest.raises(ValueError, match="no free address"):
            x.allocate("one-too-many", None, sim.now)


def test_request_that_meets_a_full_donor_fails():
    net = ipaddress.IPv4Network("10.9.0.0/29")  # 6 usable addresses
    sim = Sim(0, net)
    a = sim.add(1)
    b = sim.add(2, [1])
    sim.step()
    sim.allocate(a.us, "a0")
    sim.run(lambda: not sim.queue, 5)
    sim.allocate(b.us, "b0")  # asks a, which uses up its space before the request arrives
    for i in range(1, 6):
        sim.allocate(a.us, f"a{i}")
    sim.run(lambda: sim.failed, 10)
    assert [f.container_id for f in sim.failed] == ["b0"] and not b.pending
    assert_distinct_in_range(sim.done.values(), net)


def test_subnet_allocation_gets_space_inside_the_subnet():
    sim = Sim(1)
    a, b = sim.add(1), sim.add(2, [1])
    sim.step()
    sub = ipaddress.IPv4Network("10.47.255.0/24")
    for i in range(3):
        sim.allocate(a.us, f"a{i}", sub)
        sim.allocate(b.us, f"b{i}", sub)
    sim.run(lambda: len(sim.done) == 6, 10)
    assert_distinct_in_range(sim.done.values(), sub)
    assert all(x.network == sub for x in sim.done.values())


def test_partition_only_owners_allocate_and_empty_side_waits():
    sim = Sim(2)
    names = chain(sim, 3)
    sim.allocate(names[0], "x")
    sim.allocate(names[1], "y")
    sim.run(lambda: len(sim.done) == 2 and not sim.queue, 10)
    sim.cut(names[1], names[2])  # 3 never got space and is now alone
    sim.allocate(names[0], "x2")
    sim.allocate(names[1], "y2")
    sim.allocate(names[2], "z")
    sim.run(timeout=5)
    assert (names[2], "z") not in sim.done and sim.nodes[names[2]].pending
    sim.links.add(frozenset((names[1], names[2])))
    sim.topology_changed()
    sim.run(lambda: (names[2], "z") in sim.done, 10)
    assert_distinct_in_range(sim.done.values())


def test_two_rings_meeting_are_refused():
    sim = Sim()
    a, b = sim.add(1), sim.add(2)  # both launched alone: each claims the whole range
    sim.allocate(a.us, "c")
    sim.allocate(b.us, "d")
    with pytest.raises(RingConflict, match="inconsistent rings"):
        a.receive(b.encode_gossip(), 1.0)


def test_two_seeds_connected_before_claiming_only_one_claims():
    sim = Sim()
    a, b = sim.add(1), sim.add(2)
    sim.links.add(frozenset((a.us, b.us)))
    sim.topology_changed()
    sim.allocate(b.us, "c")  # b has not heard a yet: waits
    sim.allocate(a.us, "d")  # likewise
    sim.run(lambda: len(sim.done) == 2, 10)
    assert a.ring.ring_id == b.ring.ring_id and a.ring.ring_id.startswith(a.us)  # the lower name seeded


def test_restart_from_json_keeps_space_and_allocations():
    sim = Sim(4)
    names = chain(sim, 3)
    for n in names:
        for i in range(5):
            sim.allocate(n, f"{n}-{i}")
    sim.run(lambda: len(sim.done) == 15 and not sim.queue, 20)
    b = sim.nodes[names[1]]
    saved = b.to_json()
    before = b.allocations()
    restored = Allocator.from_json(saved, names[1], RANGE, rng=random.Random(9))
    assert restored.allocations() == before
    assert restored.ring.to_wire() == b.ring.to_wire()
    sim.nodes[names[1]] = restored
    sim.topology_changed()
    for i in range(5):
        sim.allocate(names[1], f"new-{i}")
        addr, _ = restored.allocate(f"{names[1]}-{i}", None, sim.now)  # idempotent after restart
        assert addr == sim.done[(names[1], f"{names[1]}-{i}")]
    sim.run(lambda: sum(1 for k in sim.done if k[1].startswith("new-")) == 5, 10)
    assert_distinct_in_range(sim.done.values())


def test_rmpeer_moves_space_and_is_refused_twice():
    sim = Sim(5)
    names = chain(sim, 3)
    for n in names:
        sim.allocate(n, f"{n}-x")
    sim.run(lambda: len(sim.done) == 3 and not sim.queue, 20)
    a, b, c = (sim.nodes[n] for n in names)
    with pytest.raises(ValueError, match="connected"):
        a.rmpeer(c.us, {b.us, c.us}, sim.now)
    with pytest.raises(ValueError, match="ourselves"):
        a.rmpeer(a.us, set(), sim.now)
    c_owned = sum(hi - lo for lo, hi in a.ring.owned_by(c.us))
    del sim.nodes[c.us]  # c is gone for good
    sim.links = {link for link in sim.links if c.us not in link}
    sim.topology_changed()
    got, actions = a.rmpeer(c.us, {b.us}, sim.now)
    assert got == c_owned > 0
    sim.apply(a.us, actions)
    sim.run(lambda: not b.ring.owned_by(c.us), 5)
    with pytest.raises(ValueError, match="already removed"):
        a.rmpeer(c.us, {b.us}, sim.now)
    with pytest.raises(ValueError, match="already removed"):
        b.rmpeer(c.us, {a.us}, sim.now)
    assert sum(hi - lo for lo, hi in a.ring.owned_by(a.us)) >= c_owned


@pytest.mark.parametrize("seed", range(3))
def test_lost_and_duplicated_messages_still_end_distinct(seed):
    sim = Sim(seed, loss=0.2)
    names = chain(sim, 5)
    for i in range(10):
        for n in names:
            sim.allocate(n, f"{n}-c{i}")
    sim.run(lambda: len(sim.done) == 50, timeout=120)
    assert_distinct_in_range(sim.done.values())


def test_seed_answers_early_askers_as_soon_as_it_claims():
    sim = Sim(0)
    sim.add(1)
    b = sim.add(2, [1])
    sim.allocate(b.us, "c")  # before a heard b's state: a cannot claim yet, and remembers b asked
    took = sim.run(lambda: (b.us, "c") in sim.done, 5)
    assert took < 1.0  # not the 2 s retry


def test_rmpeer_of_one_peer_on_both_sides_of_a_partition_conflicts_when_they_meet():
    sim = Sim(6)
    names = chain(sim, 3)
    for n in names:
        sim.allocate(n, f"{n}-x")
    sim.run(lambda: len(sim.done) == 3 and not sim.queue, 20)
    a, b, c = (sim.nodes[n] for n in names)
    del sim.nodes[c.us]
    sim.links = set()
    sim.topology_changed()
    sim.apply(a.us, a.rmpeer(c.us, set(), sim.now)[1])
    sim.apply(b.us, b.rmpeer(c.us, set(), sim.now)[1])
    with pytest.raises(RingConflict, match="inconsistent entries"):
        a.receive(b.encode_gossip(), sim.now)


def test_explicit_address_in_another_routers_space_is_handed_over_or_refused():
    sim = Sim(8)
    a, b = sim.add(1), sim.add(2, [1])
    sim.step()
    sim.allocate(a.us, "a0")  # a creates the ring and owns everything
    sim.run(lambda: not sim.queue, 5)
    status, actions = b.claim("b0", ipaddress.IPv4Interface("10.32.0.5/12"), sim.now)
    assert status == "foreign"
    sim.apply(b.us, actions)
    sim.run(lambda: a.ring.owner_at(int(ipaddress.IPv4Address("10.32.0.5"))) == b.us, 5)
    for i in range(1, 10):
        sim.allocate(a.us, f"a{i}")
    assert ipaddress.IPv4Interface("10.32.0.5/12") not in [sim.done[(a.us, f"a{i}")] for i in range(10)]
    # An address a has in use: refused.
    status, actions = b.claim("b1", sim.done[(a.us, "a1")], sim.now)
    sim.apply(b.us, actions)
    sim.run(lambda: sim.refused, 5)
    assert sim.refused[0].container_id == "b1" and "in use on router" in sim.refused[0].reason
