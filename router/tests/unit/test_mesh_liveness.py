"""Liveness at scale: per-connection deadlines (heartbeats, silence limit) for a router with many peers."""

from __future__ import annotations

from weavenet.mesh.channel import MsgType
from weavenet.mesh.core import Send

from .meshsim import SimNet

LEAVES = 40


def star(net: SimNet, leaves: int = LEAVES):
    """A hub and `leaves` peers that each know only the hub (discovery off): the hub has `leaves` connections."""
    hub = net.add(1, discovery=False)
    others = [net.add(i, discovery=False) for i in range(2, leaves + 2)]
    for m in others:
        net.run(net.addr_of(m), m.connect([net.addr_of(hub)], net.now))
    net.until(lambda: sum(1 for c in hub.live_connections() if c.state == "established") == leaves, 30)
    net.advance(1.0)
    return hub, others


def heartbeats_sent(hub, actions: list) -> dict[int, int]:
    """conn id -> heartbeats in these actions (a heartbeat frame has a fixed size per connection)."""
    counts: dict[int, int] = {}
    for a in actions:
        if isinstance(a, Send) and a.conn_id in hub.conns:
            conn = hub.conns[a.conn_id]
            if conn.channel is not None and len(a.data) == len(conn.channel.encode(MsgType.HEARTBEAT, b"\0" * 24)):
                counts[a.conn_id] = counts.get(a.conn_id, 0) + 1
    return counts


def test_every_connection_gets_a_heartbeat_each_interval():
    net = SimNet()
    hub, _ = star(net)
    sent: list = []
    hook_addr = net.addr_of(hub)
    net.hooks[hook_addr] = lambda acts: (sent.extend(acts), acts)[1]
    net.advance(7.0)
    counts = heartbeats_sent(hub, sent)
    interval = hub.config.heartbeat_interval
    assert len(counts) == LEAVES
    # one per interval whatever else went (gossip), ticks of 50 ms: never a burst, never one left out
    assert all(int(7.0 / (interval + 0.05)) <= n <= int(7.0 / interval) + 1 for n in counts.values()), counts


def test_timer_heap_stays_bounded():
    net = SimNet()
    hub, _ = star(net)
    net.advance(30.0)
    assert len(hub._timers) <= 2 * len(hub.conns) + 4


def test_silent_leaf_dropped_within_three_seconds_and_no_other():
    net = SimNet()
    hub, others = star(net)
    victim = others[7]
    net.down.add(net.addr_of(victim))  # no FIN: it just goes silent
    took = net.until(lambda: victim.identity.name not in hub.topology.peers
                     or victim.identity.name not in hub.routes.reachable(), timeout=10)
    assert took <= 3.0
    net.advance(5.0)
    assert len(hub.live_connections()) == LEAVES - 1

