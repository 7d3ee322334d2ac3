"""The gossip layer: new-neighbour sync and anti-entropy for every channel, alone and on real meshes with
the router's dispatcher; a channel's ProtocolError costs only the connection the message came on."""

from __future__ import annotations

import random

import pytest

from weavenet.mesh.errors import ProtocolError
from weavenet.mesh.gossip import Gossiper, GossipSend
from weavenet.weaver.dns_service import FULL_SYNC_INTERVAL, DnsService
from weavenet.weaver.events import Dispatcher

from .meshsim import SimNet, full_mesh


class SetChannel:
    """A grow-only set of byte strings: full state is every item (b"F" first), a merge passes on the new ones
    (b"D" first)."""

    def __init__(self, *items: bytes) -> None:
        self.items = set(items)
        self.hooks: list[tuple[str, str]] = []
        self.merged: list[tuple[str, bytes]] = []

    def full_state(self) -> bytes | None:
        return b"F" + b",".join(sorted(self.items)) if self.items else None

    def merge(self, src: str, payload: bytes, now: float) -> bytes | None:
        self.merged.append((src, payload))
        if payload == b"bad":
            raise ProtocolError("not a set")
        new = set(payload[1:].split(b",")) - self.items
        self.items |= new
        return b"D" + b",".join(sorted(new)) if new else None

    def on_neighbour_up(self, peer: str, now: float) -> None:
        self.hooks.append(("up", peer))

    def on_neighbour_down(self, peer: str, now: float) -> None:
        self.hooks.append(("down", peer))


def test_a_new_neighbour_gets_every_channels_full_state_once():
    g = Gossiper(random.Random(1))
    one, two, empty = SetChannel(b"x"), SetChannel(b"y"), SetChannel()
    g.register("one", one)
    g.register("two", two)
    g.register("empty", empty)   # nothing to say: nothing sent
    assert g.neighbours_changed(frozenset({"a"}), 0) == [GossipSend("one", b"Fx", "a"), GossipSend("two", b"Fy", "a")]
    assert g.neighbours_changed(frozenset({"a"}), 1) == []
    assert g.neighbours_changed(frozenset({"a", "b"}), 2) == [GossipSend("one", b"Fx", "b"),
                                                              GossipSend("two", b"Fy", "b")]
    assert g.neighbours_changed(frozenset({"b"}), 3) == []
    assert one.hooks == [("up", "a"), ("up", "b"), ("down", "a")]
    with pytest.raises(ValueError):
        g.register("one", SetChannel())


def test_merge_passes_on_what_was_new_and_anti_entropy_picks_one_neighbour_per_interval():
    g = Gossiper(random.Random(2))
    ch = SetChannel(b"x")
    g.register("s", ch, interval=10.0)
    g.neighbours_changed(frozenset({"a", "b", "c"}), 0)
    # only the news, to every neighbour but the sender (and its neighbours: none known here)
    assert g.message("s", "a", b"Dx,y", 0) == [GossipSend("s", b"Dy", None, frozenset({"a"}))]
    assert g.message("s", "a", b"Dy", 0) == []
    sent = [s for t in range(0, 600) for s in g.tick(t / 10)]
    assert 5 <= len(sent) <= 13 and all(s.dest in {"a", "b", "c"} and s.payload == b"Fx,y" for s in sent)
    assert len({s.dest for s in sent}) > 1


def test_a_channel_with_a_digest_sends_it_in_anti_entropy_rounds_and_its_full_state_to_new_neighbours():
    class Digested(SetChannel):
        def digest(self) -> bytes:
            return b"Q" + str(len(self.items)).encode()
    g = Gossiper(random.Random(3))
    g.register("s", Digested(b"x", b"y"), interval=10.0)
    assert g.neighbours_changed(frozenset({"a"}), 0) == [GossipSend("s", b"Fx,y", "a")]
    sent = [s for t in range(0, 300) for s in g.tick(t / 10)]
    assert sent and all(s == GossipSend("s", b"Q2", "a") for s in sent)


def test_a_refused_message_sends_nothing_queued_during_its_merge():
    g = Gossiper()

    class Chatty(SetChannel):
        def merge(self, src, payload, now):
            send(b"reply", src)
            return super().merge(src, payload, now)
    send = g.register("s", Chatty())
    assert g.message("s", "a", b"Dz", 0) == [GossipSend("s", b"Dz", None, frozenset({"a"})),
                                             GossipSend("s", b"reply", "a")]
    with pytest.raises(ProtocolError):
        g.message("s", "a", b"bad", 0)
    assert g.tick(0) == []   # (no neighbours) and the refused merge's reply is gone


def test_what_a_merge_learnt_skips_the_sender_and_the_senders_neighbours():
    g = Gossiper()
    g.register("s", SetChannel())
    g.neighbours_changed(frozenset({"a", "b", "c"}), 0)
    g.adjacency_changed({"a": ["b", "us"], "b": ["a", "us"], "c": ["us"]})
    assert g.message("s", "a", b"Dx", 0) == [GossipSend("s", b"Dx", None, frozenset({"a", "b", "us"}))]


class Node:
    def __init__(self, net: SimNet, index: int, *items: bytes, discovery: bool = True) -> None:
        self.net, self.mesh = net, net.add(index, discovery=discovery)
        self.name = self.mesh.identity.name
        self.channel = SetChannel(*items)
        self.dns = DnsService(self.mesh, "weave.local", 1, [], "none")
        gossip = Gossiper(random.Random(index))
        gossip.register("set", self.channel, interval=5.0)
        self.dispatch = Dispatcher(self.mesh, gossip, dns=self.dns)
        net.hooks[net.addr_of(self.mesh)] = lambda outputs: self.dispatch.run(outputs, net.now)

    def tick(self) -> None:
        self.net.run(self.net.addr_of(self.mesh), self.dispatch.gossip.tick(self.net.now))

    def originate(self, item: bytes) -> None:
        """A change of ours, sent to our neighbours as the channel's delta."""
        self.channel.items.add(item)
        self.net.run(self.net.addr_of(self.mesh), self.dispatch.run([GossipSend("set", b"D" + item)], self.net.now))


def spread(net: SimNet, nodes: list[Node], origin: Node, item: bytes) -> None:
    """Forget what was merged so far, then let `origin` change and the change travel."""
    for n in nodes:
        n.channel.merged.clear()
    origin.originate(item)
    net.step(0.5)


def launch(n: int) -> tuple[SimNet, list[Node]]:
    net = SimNet(4)
    nodes = [Node(net, i, f"item{i}".encode()) for i in range(1, n + 1)]
    for node in nodes[1:]:
        net.run(net.addr_of(node.mesh), node.mesh.connect([net.addr_of(nodes[0].mesh)], net.now))
    net.until(lambda: full_mesh(net), 20)
    return net, nodes


def test_in_a_full_mesh_a_change_reaches_every_router_once_not_once_per_neighbour():
    """Relays do not re-send to the sender's neighbours: in a full mesh of 6 each router merges the
    origin's change once (it was 5 times: every router passing it on to every other)."""
    net, nodes = launch(6)
    origin = nodes[2]
    spread(net, nodes, origin, b"new")
    for n in nodes:
        got = [src for src, p in n.channel.merged if b"new" in p]
        assert got == ([] if n is origin else [origin.name]), (n.name, got)
        assert b"new" in n.channel.items


def test_on_a_chain_a_change_is_still_passed_on_to_the_far_end():
    """No discovery: a chain a-b-c-d-e. Each relay's sender is not a neighbour of the next router, so the
    change travels the whole way (and not back)."""
    net = SimNet(5)
    nodes = [Node(net, i, discovery=False) for i in range(1, 6)]
    for prev, node in zip(nodes, nodes[1:], strict=False):
        net.run(net.addr_of(node.mesh), node.mesh.connect([net.addr_of(prev.mesh)], net.now))
    net.until(lambda: all(len(n.mesh.routes.unicast) == 4 for n in nodes), 20)
    spread(net, nodes, nodes[0], b"far")
    assert all(b"far" in n.channel.items for n in nodes)
    assert [len([1 for _, p in n.channel.merged if b"far" in p]) for n in nodes] == [0, 1, 1, 1, 1]


def test_on_real_meshes_each_new_neighbour_is_sent_the_full_state_exactly_once():
    net, nodes = launch(3)   # no gossip ticks: only the new-neighbour sync runs
    every = {f"item{i}".encode() for i in range(1, 4)}
    for node in nodes:
        assert node.channel.items == every
        full = sorted(src for src, p in node.channel.merged if p.startswith(b"F"))
        assert full == sorted(m.name for m in nodes if m is not node)


def test_anti_entropy_repairs_a_lost_dns_update():
    net, nodes = launch(2)
    a, b = nodes
    lost = a.dns.add("web", "10.32.0.9", "c1", net.now)   # the delta to b is never sent
    assert lost and not b.dns.store.lookup("web.weave.local.")
    start = net.now
    while not b.dns.store.lookup("web.weave.local."):
        assert net.now - start < 1.5 * FULL_SYNC_INTERVAL + 1, "anti-entropy did not repair it"
        net.step(0.1)
        for n in nodes:
            n.tick()
    assert b.dns.store.lookup("web.weave.local.") == ["10.32.0.9"]


def test_a_merge_raising_protocol_error_closes_only_that_connection():
    net, nodes = launch(3)
    a, b, c = nodes
    net.run(net.addr_of(b.mesh), b.mesh.send_app("set", b"bad"))   # to a and c
    net.step()
    for node in (a, c):
        assert node.mesh.protocol_errors == {b.name: 1}
        assert {x.remote.name for x in node.mesh.live_connections()} == {m.name for m in nodes if m not in (b, node)}
    assert {x.remote.name for x in b.mesh.live_connections()} == set()
    net.run(net.addr_of(a.mesh), a.mesh.send_app("set", b"Dlater"))   # a-c still carries gossip
    net.step()
    assert b"later" in c.channel.items
