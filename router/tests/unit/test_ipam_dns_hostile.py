"""Hostile IPAM and DNS input through the real services, on real sans-I/O meshes joined in memory: forged
senders, donation floods, rewrites of a third router's range, forged incarnations, names outside the
domain, wrong types; and the DNS forwarder's cap against an upstream that never answers (real sockets)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import socket

import dns.message
import dns.rcode
import pytest

from weavenet.ipam.allocator import DONATE_EVERY
from weavenet.ipam.init import ALONE, OBSERVER, IpamInit
from weavenet.ipam.ring import MAX_VERSION_JUMP
from weavenet.mesh.gossip import Gossiper
from weavenet.nameserver.store import MAX_RECORDS_PER_ORIGIN
from weavenet.weaver import dns_service
from weavenet.weaver.dns_service import MAX_FORWARDS, DnsService, _Server
from weavenet.weaver.events import Dispatcher
from weavenet.weaver.ipam_service import IpamService

from .meshsim import SimNet, full_mesh

RANGE = ipaddress.IPv4Network("10.32.0.0/12")
GHOST = "02:00:00:00:0e:0e"  # a peer that does not exist


class Node:
    """One router: a mesh core with the real IPAM and DNS services on the real gossip layer, the real
    dispatcher handing them the mesh's events."""

    def __init__(self, net: SimNet, index: int, tmp_path, init: IpamInit) -> None:
        self.net = net
        self.mesh = net.add(index)
        self.name = self.mesh.identity.name
        self.ipam = IpamService(self.mesh, tmp_path / f"ipam-{index}.json", RANGE, None, init=init,
                                on_claim_refused=lambda *a: None)
        self.dns = DnsService(self.mesh, "weave.local", 1, [], "none")
        self.dispatch = Dispatcher(self.mesh, Gossiper(random.Random(index)), None, self.ipam, self.dns)
        net.hooks[self.addr] = lambda outputs: self.dispatch.run(outputs, net.now)

    @property
    def addr(self) -> str:
        return self.net.addr_of(self.mesh)

    def tick(self) -> None:
        now = self.net.now
        self.net.run(self.addr, self.ipam.tick(now) + self.dns.tick(now) + self.dispatch.gossip.tick(now))

    def send(self, channel: str, payload: object, dest: str | None = None) -> None:
        """Send through our mesh as this router: the receiver's mesh authenticates us as the sender."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.net.run(self.addr, self.mesh.send_app(channel, data, dest))

    def owned(self, peer: str | None = None) -> int:
        return sum(hi - lo for lo, hi in self.ipam.alloc.ring.owned_by(peer or self.name))


def settle(net: SimNet, nodes: list[Node], seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.05)):
        net.step()
        for n in nodes:
            n.tick()


@pytest.fixture
def three(tmp_path) -> tuple[Node, Node, Node]:
    """A (the seed, owning the whole range), B and C in a full mesh, every ring agreed."""
    net = SimNet(7)
    a = Node(net, 1, tmp_path, ALONE)
    b, c = Node(net, 2, tmp_path, OBSERVER), Node(net, 3, tmp_path, OBSERVER)
    for n in (b, c):
        net.run(n.addr, n.mesh.connect([a.addr], net.now))
    nodes = [a, b, c]
    net.until(lambda: full_mesh(net), 20)
    _, actions = a.ipam.alloc.allocate("c0", None, net.now)  # the seed creates the ring once it heard B and C
    a.net.run(a.addr, a.ipam._execute(actions))
    settle(net, nodes)
    assert a.owned() == RANGE.num_addresses and not b.ipam.alloc.ring.empty and not c.ipam.alloc.ring.empty
    return a, b, c


def req(frm: str, subnet: str = str(RANGE)) -> dict:
    return {"t": "req", "from": frm, "subnet": subnet, "ring": True}


# --- IPAM -------------------------------------------------------------------------------------------------
def test_requests_claiming_another_sender_are_refused_and_counted(three):
    a, b, c = three
    for frm in (b.name, GHOST):  # C speaks for B, or for a peer that does not exist
        for _ in range(25):
            c.send("ipam", req(frm), a.name)
    settle(a.net, list(three), 1)
    assert a.owned() == RANGE.num_addresses  # nothing given away
    assert a.ipam.refused()["forged_sender"] == 50
    assert a.ipam.report()["refused"]["forged_sender"] == 50


def test_space_goes_only_to_routers_the_topology_knows(three):
    a, _, _ = three
    a.ipam.on_message(GHOST, json.dumps(req(GHOST)).encode(), a.net.now)  # even if src said so
    assert a.owned() == RANGE.num_addresses and a.ipam.refused()["unknown_requester"] == 1


def test_a_donation_flood_from_one_requester_gets_one_donation_per_interval(three):
    a, _, c = three
    for _ in range(25):
        c.send("ipam", req(c.name), a.name)
    settle(a.net, list(three), 1)
    assert a.ipam.refused()["donation_rate"] == 24
    assert RANGE.num_addresses // 4 < c.owned() <= RANGE.num_addresses // 2  # one donation: half of A's free run
    start = a.net.now
    for _ in range(10):  # ask again 20 times a second for 5 seconds: one more donation per interval at most
        for _ in range(10):
            c.send("ipam", req(c.name), a.name)
        settle(a.net, list(three), 0.5)
    donations = 1 + int((a.net.now - start) / DONATE_EVERY) + 1
    assert a.owned() >= RANGE.num_addresses >> donations
    assert a.owned() > 0


def test_a_ring_rewriting_a_third_routers_range_by_a_version_leap_is_refused(three):
    a, b, c = three
    forged = json.loads(c.ipam.alloc.encode_gossip())
    entry = forged["ring"]["entries"][0]
    assert entry[1] == a.name
    entry[1], entry[2] = c.name, entry[2] + MAX_VERSION_JUMP + 1  # "A gave me everything", pinned for good
    c.send("ipam", forged)  # gossip to neighbours A and B
    settle(a.net, list(three), 1)
    for n in (a, b):
        assert n.ipam.alloc.ring.owner_at(int(RANGE.network_address)) == a.name
        assert n.ipam.refused()["version_jump"] >= 1
    assert a.owned() == RANGE.num_addresses


def test_a_ring_giving_away_the_receivers_own_range_is_a_counted_conflict(three):
    a, _, c = three
    forged = json.loads(c.ipam.alloc.encode_gossip())
    forged["ring"]["entries"][0][1] = c.name
    forged["ring"]["entries"][0][2] += 1
    c.send("ipam", forged, a.name)
    settle(a.net, list(three), 0.5)
    assert a.owned() == RANGE.num_addresses and a.ipam.refused()["conflict"] == 1


BAD_IPAM = [
    b"", b"\xff\xfe", b"[]", b"null", b"1e999", b"[" * 100_000, b'{"t":"req"}',
    b'{"t":"req","from":"02:00:00:00:00:03","subnet":1}',
    b'{"t":"req","from":"02:00:00:00:00:03","subnet":"10.32.0.0/12","ring":"yes"}',
    b'{"t":"req","from":["x"],"subnet":"10.32.0.0/12"}',
    b'{"t":"req","from":{"a":1},"subnet":"10.32.0.0/12"}',
    b'{"t":"req","from":1,"subnet":"10.32.0.0/12"}',
    b'{"t":[1],"from":"02:00:00:00:00:03"}',
    b'{"t":"ring","from":"02:00:00:00:00:03","seed":Infinity,"ring":null}',
    b'{"t":"ring","from":"02:00:00:00:00:03","ring":{"range":"10.32.0.0/12","id":"x","removed":{},'
    b'"entries":[["10.32.0.0","02:00:00:00:00:03",Infinity,0]]}}',
    b'{"t":"ring","from":"02:00:00:00:00:03","ring":{"range":"10.32.0.0/12","id":"x","removed":{},'
    b'"entries":[["10.32.0.0","02:00:00:00:00:03",NaN,0]]}}',
    b'{"t":"ring","from":"02:00:00:00:00:03","ring":{"range":"10.32.0.0/12","id":"x","removed":{},'
    b'"entries":[["10.32.0.0","02:00:00:00:00:03",1.5,0]]}}',
    b'{"t":"ring","from":"02:00:00:00:00:03","ring":{"range":"10.32.0.0/12","id":"x","removed":{},'
    b'"entries":[[167772160,"02:00:00:00:00:03",1,0]]}}',
    b'{"t":"ring","from":"02:00:00:00:00:03","ring":{"range":"10.32.0.0/12","id":"x","removed":[],'
    b'"entries":[]}}',
    b'{"t":"ring","from":"02:00:00:00:00:03","ring":{"range":["10.32.0.0",12],"id":"x","removed":{},'
    b'"entries":[]}}',
    b'{"t":"ring","from":"02:00:00:00:00:03","ring":{"range":"10.32.0.0/12","id":"x","removed":{},'
    b'"entries":{"10.32.0.0":1}}}',
    b'{"t":"ring","from":"02:00:00:00:00:03","ring":{"range":"10.32.0.0/12","id":"x","removed":{},'
    b'"entries":[["10.32.0.0","02:00:00:00:00:03",1,99999999999]]}}',
    b'{"t":"nospace","from":"02:00:00:00:00:03","subnet":"10.32.0.0/12","ring":7}',
]


def test_wrong_types_and_non_numbers_are_counted_drops(three):
    a, _, c = three
    before = a.ipam.alloc.ring.to_wire()
    for data in BAD_IPAM:
        assert a.ipam.on_message(c.name, data, a.net.now) == []  # no exception of any other kind escapes
    assert a.ipam.refused()["malformed"] == len(BAD_IPAM)
    assert a.ipam.alloc.ring.to_wire() == before


# --- DNS --------------------------------------------------------------------------------------------------
def dns_gossip(frm: str, origins: dict, records: list) -> dict:
    return {"from": frm, "origins": origins, "records": records}


def test_a_forged_huge_incarnation_does_not_wipe_another_routers_names(three):
    a, b, c = three
    a.net.run(a.addr, a.dns.add("web", "10.32.0.1", "c0", a.net.now))
    settle(a.net, list(three), 1)
    assert b.dns.store.lookup("web.weave.local.") == ["10.32.0.1"]
    c.send("dns", dns_gossip(c.name, {a.name: 2**52}, []), b.name)
    c.send("dns", dns_gossip(c.name, {}, [["web.weave.local.", "10.32.0.9", "x", a.name, 2**52, 1, 0]]), b.name)
    c.send("dns", dns_gossip(a.name, {a.name: 2**52}, []), b.name)  # and claiming to be A
    settle(a.net, list(three), 1)
    assert b.dns.store.lookup("web.weave.local.") == ["10.32.0.1"]
    assert b.dns.refused() == {"future_incarnation": 2, "forged_sender": 1}
    # A version beyond what A could have written is refused too (it would pin the record).
    inc = a.dns.store.incarnation
    c.send("dns", dns_gossip(c.name, {}, [["web.weave.local.", "10.32.0.1", "c0", a.name, inc, 2**50, 1]]), b.name)
    settle(a.net, list(three), 0.5)
    assert b.dns.store.lookup("web.weave.local.") == ["10.32.0.1"] and b.dns.refused()["future_version"] == 1


@pytest.mark.parametrize("name", ["evil.example.com.", "weave.local.", "a..weave.local.", "-x.weave.local.",
                                  "x" * 64 + ".weave.local.", ("a" * 60 + ".") * 5 + "weave.local.",
                                  "caf\u00e9.weave.local.", "x.weave.local"])
def test_names_outside_the_domain_or_invalid_are_refused(three, name):
    _, b, c = three
    inc = c.dns.store.incarnation
    c.send("dns", dns_gossip(c.name, {}, [[name, "10.32.0.5", "cx", c.name, inc, 1, 0],
                                          ["ok.weave.local.", "10.32.0.6", "cy", c.name, inc, 2, 0]]), b.name)
    settle(b.net, list(three), 0.5)
    assert b.dns.store.lookup("ok.weave.local.") == ["10.32.0.6"]
    assert sum(b.dns.refused().values()) == 1
    assert all(r.name == "ok.weave.local." for r in b.dns.store.records.values())


def test_records_per_origin_are_capped(three):
    _, b, c = three
    inc = c.dns.store.incarnation
    recs = [[f"n{i}.weave.local.", "10.32.0.5", f"c{i}", c.name, inc, i + 1, 0]
            for i in range(MAX_RECORDS_PER_ORIGIN + 50)]
    b.dns.merge(c.name, json.dumps(dns_gossip(c.name, {}, recs)).encode(), b.net.now)
    assert len(b.dns.store.records) == MAX_RECORDS_PER_ORIGIN
    assert b.dns.refused()["origin_full"] == 50
    assert b.dns.store.lookup(f"n{MAX_RECORDS_PER_ORIGIN - 1}.weave.local.") == ["10.32.0.5"]


BAD_DNS = [
    b"", b"\xff", b"[]", b"1e999", b"{" * 50_000, b'{"from":"02:00:00:00:00:03"}',
    b'{"from":"02:00:00:00:00:03","origins":{"02:00:00:00:00:01":Infinity},"records":[]}',
    b'{"from":"02:00:00:00:00:03","origins":{"02:00:00:00:00:01":NaN},"records":[]}',
    b'{"from":"02:00:00:00:00:03","origins":{"02:00:00:00:00:01":1e400},"records":[]}',
    b'{"from":"02:00:00:00:00:03","origins":{"02:00:00:00:00:01":"5"},"records":[]}',
    b'{"from":"02:00:00:00:00:03","origins":{"02:00:00:00:00:01":-1},"records":[]}',
    b'{"from":"02:00:00:00:00:03","origins":[],"records":[]}',
    b'{"from":7,"origins":{},"records":[]}',
    b'{"from":"02:00:00:00:00:03","origins":{},"records":[["x.weave.local.","10.32.0.1","c",'
    b'"02:00:00:00:00:03",1.5,1,0]]}',
    b'{"from":"02:00:00:00:00:03","origins":{},"records":[["x.weave.local.",167772161,"c",'
    b'"02:00:00:00:00:03",1,1,0]]}',
    b'{"from":"02:00:00:00:00:03","origins":{},"records":[[["x"],"10.32.0.1","c","02:00:00:00:00:03",1,1,0]]}',
    b'{"from":"02:00:00:00:00:03","origins":{},"records":[["x.weave.local.","10.32.0.1",{},'
    b'"02:00:00:00:00:03",1,1,0]]}',
    b'{"from":"02:00:00:00:00:03","origins":{},"records":[["x.weave.local.","10.32.0.1","c",'
    b'"02:00:00:00:00:03",1,1,7]]}',
    b'{"from":"02:00:00:00:00:03","origins":{},"records":{"a":1}}',
]


def test_dns_gossip_of_wrong_types_is_a_counted_drop(three):
    _, b, c = three
    for data in BAD_DNS:
        assert b.dns.merge(c.name, data, b.net.now) is None
    assert b.dns.refused() == {"malformed": len(BAD_DNS)}
    assert b.dns.store.records == {}


# --- the DNS forwarder --------------------------------------------------------------------------------------
def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_forwarder_caps_concurrent_forwards_against_an_upstream_that_never_answers(three, monkeypatch):
    monkeypatch.setattr(dns_service, "UPSTREAM_TIMEOUT", 1.0)  # (shorter test; the cap is what is measured)
    _, b, _ = three
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the upstream: receives, never answers
    silent.bind(("127.0.0.1", 0))
    svc = DnsService(b.mesh, "weave.local", 1, ["127.0.0.1"], "none", upstream_port=silent.getsockname()[1])
    n_queries = 4 * MAX_FORWARDS

    async def run() -> tuple[int, int, list[int], int]:
        loop = asyncio.get_running_loop()
        svc._transport, _ = await loop.create_datagram_endpoint(lambda: _Server(svc), local_addr=("127.0.0.1", 0))
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        server = svc._transport.get_extra_info("sockname")
        base, peak = open_fds(), 0
        for i in range(n_queries):
            client.sendto(dns.message.make_query(f"host{i}.example.com.", "A").to_wire(), server)
            await asyncio.sleep(0)
            peak = max(peak, open_fds())
        for _ in range(30):
            await asyncio.sleep(0.05)
            peak = max(peak, open_fds())
        while svc._forwards:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        rcodes = []
        while True:
            try:
                rcodes.append(dns.message.from_wire(client.recv(4096)).rcode())
            except BlockingIOError:
                break
        after = open_fds()
        client.close()
        svc.stop()
        return base, peak, rcodes, after

    try:
        base, peak, rcodes, after = asyncio.run(run())
    finally:
        silent.close()
    assert peak - base <= MAX_FORWARDS  # one socket per forward at most, never more forwards than the cap
    assert after <= base  # every upstream socket closed
    # On a loaded machine the first forwards may time out before the last query is sent, freeing slots:
    # the cap bounds forwards in flight (peak above), so totals are checked as a sum.
    forwarded = svc.counters["forwarded"]
    assert MAX_FORWARDS <= forwarded < n_queries
    assert svc.counters["forward_refused"] == n_queries - forwarded
    assert svc.counters["upstream_failed"] == forwarded
    assert rcodes.count(dns.rcode.SERVFAIL) == n_queries  # every client got an answer, none hangs


def test_garbage_queries_are_answered_formerr_or_dropped_never_raised(three):
    _, b, _ = three
    svc = b.dns

    async def run() -> None:
        for data in (b"", b"\x00", b"\x12\x34" + b"\xff" * 30, b"\x00" * 12 + b"\xc0\x0c" * 100,
                     dns.message.make_query("x.weave.local.", "A").to_wire()[:-3]):
            _Server(svc).datagram_received(data, ("127.0.0.1", 9))

    asyncio.run(run())
    assert svc.counters["answered"] == 5  # a FORMERR each
    assert svc.counters["bad_queries"] == 0 and svc.counters["forwarded"] == 0


def test_per_peer_and_per_subnet_tables_stay_bounded(three):
    a, b, c = three
    alloc = b.ipam.alloc
    for i in range(200):  # waiting callers in 200 subnets, all giving up: nothing about them remains
        net = ipaddress.IPv4Network(f"10.40.{i}.0/24")
        alloc.allocate(f"x{i}", net, b.net.now)
        alloc.cancel(f"x{i}", net)
        b.ipam.tick(b.net.now + 10 * i)
    assert len(alloc._asked) <= 1
    c.send("ipam", {"t": "nospace", "from": c.name, "subnet": str(RANGE), "ring": None}, a.name)
    settle(a.net, list(three), 0.5)
    assert c.name in a.ipam.alloc._nospace
    a.net.kill(c.mesh)
    settle(a.net, [a, b], 5)
    assert c.name not in a.ipam.alloc._nospace and all(k[0] != c.name for k in a.ipam.alloc._donated)
