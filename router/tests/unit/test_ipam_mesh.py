"""IPAM and DNS cores plugged into real sans-I/O mesh cores through application channels, as the adapter
would do it: the seed's chain launch, concurrent allocations on every host, names resolved across hosts."""

from __future__ import annotations

import random

from weavenet.ipam import Allocated, Allocator, GossipChanged, SendTo
from weavenet.nameserver import RecordStore

from .meshsim import SimNet


class Host:
    """The glue an adapter needs: actions of the cores become mesh sends, app messages feed the cores."""

    def __init__(self, net: SimNet, index: int, peers: list[Host]) -> None:
        self.net = net
        self.mesh = net.add(index)
        self.name = self.mesh.identity.name
        self.alloc = Allocator(self.name, seed=not peers, rng=random.Random(index))
        self.dns = RecordStore(self.name, incarnation=index)
        self.done: dict[str, str] = {}
        self._neighbours: set[str] = set()
        self._reachable: set[str] = set()
        self.mesh.on_app_message = self.on_app
        if peers:
            net.run(self.addr, self.mesh.connect([peers[-1].addr], net.now))

    @property
    def addr(self) -> str:
        return self.net.addr_of(self.mesh)

    def execute(self, actions) -> list:
        out = []
        for a in actions:
            if isinstance(a, SendTo):
                out += self.mesh.send_app("ipam", a.data, a.peer)
            elif isinstance(a, GossipChanged):
                out += self.mesh.send_app("ipam", self.alloc.encode_gossip())
            elif isinstance(a, Allocated):
                self.done[a.container_id] = str(a.address)
        return out

    def on_app(self, channel: str, src: str, payload: bytes) -> list:
        now = self.net.now
        if channel == "ipam":
            return self.execute(self.alloc.receive(payload, now, src))
        changed = self.dns.merge(payload, now, src)
        return self.mesh.send_app("dns", self.dns.encode_gossip(changed)) if changed else []

    def tick(self) -> None:
        routes = self.mesh.routes.unicast
        neighbours = self.mesh.routes.neighbours()
        reachable = set(routes)
        actions = []
        if (neighbours, reachable) != (self._neighbours, self._reachable):
            new = neighbours - self._neighbours
            self._neighbours, self._reachable = neighbours, reachable
            actions += self.execute(self.alloc.peers_changed(neighbours, reachable, self.net.now))
            for p in new:  # DNS: everything to each new neighbour
                actions += self.mesh.send_app("dns", self.dns.encode_gossip(), p)
        actions += self.execute(self.alloc.tick(self.net.now))
        self.net.run(self.addr, actions)

    def allocate(self, cid: str) -> None:
        addr, actions = self.alloc.allocate(cid, None, self.net.now)
        if addr is not None:
            self.done[cid] = str(addr)
        self.net.run(self.addr, self.execute(actions))

    def add_name(self, name: str, address: str, cid: str) -> None:
        changed = self.dns.add(name, address, cid, self.net.now)
        self.net.run(self.addr, self.mesh.send_app("dns", self.dns.encode_gossip(changed)))


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


def test_chain_launch_then_twenty_concurrent_allocations_per_host_and_dns_across_hosts():
    net = SimNet(3)
    hosts: list[Host] = []
    for i in range(1, 4):  # A; B given A; C given B
        hosts.append(Host(net, i, hosts))
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
    c.net.run(c.addr, c.mesh.send_app("dns", c.dns.encode_gossip(c.dns.remove_container(f"{c.name}-c0", net.now))))
    until(net, hosts, lambda: not a.dns.lookup("web.weave.local."), 5)
