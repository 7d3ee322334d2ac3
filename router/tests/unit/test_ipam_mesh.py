"""IPAM and DNS services on real sans-I/O mesh cores through the router's dispatcher and gossip layer: the
seed's chain launch, concurrent allocations on every host, names resolved across hosts."""

from __future__ import annotations

import ipaddress
import random

from weavenet.ipam.init import IpamInit, consensus, default_init
from weavenet.mesh.gossip import Gossiper
from weavenet.weaver.dns_service import DnsService
from weavenet.weaver.events import Dispatcher
from weavenet.weaver.ipam_service import IpamService

from .meshsim import SimNet

RANGE = ipaddress.IPv4Network("10.32.0.0/12")


class Host:
    """A mesh core with the real IPAM and DNS services, plugged in by the real dispatcher and gossip layer."""

    def __init__(self, net: SimNet, index: int, peers: list[Host], tmp_path, init: IpamInit | None = None) -> None:
        self.net = net
        self.mesh = net.add(index)
        self.name = self.mesh.identity.name
        self.ipam = IpamService(self.mesh, tmp_path / f"ipam-{index}.json", RANGE, None,
                                init=init or default_init(1 if peers else 0), on_claim_refused=lambda *a: None)
        self.alloc = self.ipam.alloc
        self.dns_service = DnsService(self.mesh, "weave.local", 1, [], "none")
        self.dns = self.dns_service.store
        self.dispatch = Dispatcher(self.mesh, Gossiper(random.Random(index)), None, self.ipam, self.dns_service)
        net.hooks[self.addr] = lambda outputs: self.dispatch.run(outputs, net.now)
        self.cids: set[str] = set()
        if peers:
            net.run(self.addr, self.mesh.connect([peers[-1].addr], net.now))

    @property
    def addr(self) -> str:
        return self.net.addr_of(self.mesh)

    @property
    def done(self) -> dict[str, str]:
        return {c: str(a[0]) for c in self.cids if (a := self.alloc.lookup(c))}

    def tick(self) -> None:
        now = self.net.now
        self.net.run(self.addr, self.ipam.tick(now) + self.dns_service.tick(now) + self.dispatch.gossip.tick(now))

    def allocate(self, cid: str) -> None:
        self.cids.add(cid)
        _, actions = self.alloc.allocate(cid, None, self.net.now)
        self.net.run(self.addr, self.ipam._execute(actions))

    def add_name(self, name: str, address: str, cid: str) -> None:
        self.net.run(self.addr, self.dns_service.add(name, address, cid, self.net.now))


def step(net: SimNet, hosts: list[Host]) -> None:
    net.step()
    for h in hosts:
        h.tick()


def until(net: SimNet, hosts: list[Host], cond, timeout: float) -> float:
    start = net.now
    while not cond():
        assert net.now - start < timeout, "not reached"
        step(net, hosts)
    return net.now - start


def test_chain_launch_then_twenty_concurrent_allocations_per_host_and_dns_across_hosts(tmp_path):
    net = SimNet(3)
    hosts: list[Host] = []
    for i in range(1, 4):  # A; B given A; C given B
        hosts.append(Host(net, i, hosts, tmp_path))
        step(net, hosts)
    until(net, hosts, lambda: all(len(h.mesh.routes.unicast) == 2 for h in hosts), 30)
    for i in range(20):
        for h in hosts:
            h.allocate(f"{h.name}-c{i}")
    took = until(net, hosts, lambda: all(len(h.done) == 20 for h in hosts), 30)
    assert took < 10
    addrs = [a for h in hosts for a in h.done.values()]
    assert len(set(addrs)) == 60 and all(a.startswith(("10.3", "10.4")) for a in addrs)
    a, _, c = hosts
    c.add_name("web", c.done[f"{c.name}-c0"].split("/")[0], f"{c.name}-c0")
    until(net, hosts, lambda: a.dns.lookup("web.weave.local."), 5)
    assert a.dns.lookup("web.weave.local.") == [c.done[f"{c.name}-c0"].split("/")[0]]
    c.net.run(c.addr, c.dns_service.remove(f"{c.name}-c0", net.now))
    until(net, hosts, lambda: not a.dns.lookup("web.weave.local."), 5)


def test_all_mode_launched_at_once_agree_over_the_real_mesh(tmp_path):
    """consensus=3, every router given every other one, all allocating before any connection is up: the
    consensus claims travel as routed unicasts of the real mesh and gossip layer; one ring results."""
    net = SimNet(5)
    hosts = [Host(net, i, [], tmp_path, init=consensus(3)) for i in (1, 2, 3)]
    for h in hosts:
        net.run(h.addr, h.mesh.connect([o.addr for o in hosts if o is not h], net.now))
    for h in hosts:
        h.allocate(f"{h.name}-c0")
    until(net, hosts, lambda: all(len(h.done) == 1 for h in hosts), 30)
    assert len({a for h in hosts for a in h.done.values()}) == 3
    assert len({h.alloc.ring.ring_id for h in hosts}) == 1
    assert all(h.alloc.status()["consensus"] == {"state": "achieved"} for h in hosts)
    assert all(not h.ipam.refused() for h in hosts)
