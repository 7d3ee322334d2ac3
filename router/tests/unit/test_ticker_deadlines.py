"""The deadline-driven ticker (issue #11, cost per peer): each part says when it next has work, heartbeats leave
on one grid so an idle router wakes once per heartbeat interval however many connections it has, and an event
that makes work due wakes the ticker at once."""

from __future__ import annotations

import asyncio
import time

from weavenet.weaver import dataplane as dpmod
from weavenet.weaver.app import Router

from .meshsim import SimNet, full_mesh
from .test_mesh_sim import launch_chain


def star(n: int) -> tuple[SimNet, list]:
    """A hub and n-1 spokes that dial it one after the other (so the connections' phases differ)."""
    net = SimNet()
    hub = net.add(1)
    spokes = []
    for i in range(2, n + 1):
        s = net.add(i, discovery=False)
        net.run(net.addr_of(s), s.connect([net.addr_of(hub)], net.now))
        spokes.append(s)
        net.advance(0.13)
    net.until(lambda: len(hub.live_connections()) == n - 1, 10)
    return net, [hub, *spokes]


def run_at_deadlines(net: SimNet, seconds: float, watch, dt: float = 0.01) -> list[float]:
    """Advance time in small steps, ticking each mesh only once its deadline has come (as the router's ticker
    does); return the times `watch` was ticked."""
    ticks = []
    end = net.now + seconds
    while net.now < end:
        net.now += dt
        net.kernel_timeouts()
        for addr, m in net.meshes.items():
            if addr not in net.down and addr not in net.hung and net.now >= m.next_deadline():
                if m is watch:
                    ticks.append(net.now)
                net.run(addr, m.tick(net.now))
        net._deliver()
    return ticks


def test_an_idle_mesh_has_a_deadline_in_the_future_and_a_change_makes_it_now():
    net = SimNet()
    meshes = launch_chain(net, 3)
    net.until(lambda: full_mesh(net), 30)
    net.advance(2)
    a = meshes[0]
    due = a.next_deadline()
    assert net.now < due <= net.now + a.config.heartbeat_interval + 0.05
    net.kill(meshes[1])                      # a connection goes: routes, gossip and dial targets have work now
    assert a.next_deadline() == 0.0
    net.advance(0.5)                          # (each failed redial of the dead peer asks for one more pass)
    assert a.next_deadline() > net.now


def test_heartbeats_of_every_connection_leave_in_the_same_tick():
    net, (hub, *spokes) = star(8)
    run_at_deadlines(net, 3, hub)            # the first heartbeats align to the grid
    interval = hub.config.heartbeat_interval
    sent_at: dict[float, int] = {}
    orig = hub._heartbeat

    def counted(conn, now):
        sent_at[net.now] = sent_at.get(net.now, 0) + 1
        return orig(conn, now)
    hub._heartbeat = counted
    ticks = run_at_deadlines(net, 7, hub)
    # 7 connections: one heartbeat tick per interval carries all of them (before: 7 separate deadlines)
    assert len(sent_at) <= 7 / interval + 1, sent_at
    assert all(n == 7 for n in sent_at.values()), sent_at
    # ... and the hub woke a few times a second, not at the old fixed 10 ticks a second
    assert len(ticks) < 7 * 4, len(ticks)
    assert len(hub.live_connections()) == 7 and all(len(s.live_connections()) == 1 for s in spokes)


def test_heartbeat_slots_are_never_later_than_due():
    net, (hub, *_) = star(5)
    interval = hub.config.heartbeat_interval
    last: dict[int, float] = {}
    gaps: list[float] = []
    orig = hub._heartbeat

    def watched(conn, now):
        if conn.id in last:
            gaps.append(net.now - last[conn.id])
        last[conn.id] = net.now
        return orig(conn, now)
    hub._heartbeat = watched
    run_at_deadlines(net, 10, hub)
    assert gaps and max(gaps) <= interval + 0.011   # (one simulation step)


def test_a_silently_cut_peer_is_still_dropped_within_the_timeout_when_ticking_at_deadlines():
    net, (hub, *spokes) = star(4)
    run_at_deadlines(net, 3, hub)
    victim = spokes[1]
    net.cut.add(frozenset((net.addr_of(hub), net.addr_of(victim))))
    cut_at = net.now
    name = victim.identity.name

    def gone() -> bool:
        return all(c.remote.name != name for c in hub.live_connections())
    while not gone():
        run_at_deadlines(net, 0.01, hub)
        assert net.now - cut_at < 5
    # the kernel's limit (keepalive, TCP_USER_TIMEOUT), whatever the heartbeats' cadence
    cfg = hub.config
    assert net.now - cut_at <= cfg.heartbeat_interval + cfg.tcp_user_timeout + 0.05
    assert len(hub.live_connections()) == 2          # the others stayed up


def test_a_hung_peer_is_dropped_at_the_silence_limit_when_ticking_at_deadlines():
    """Its kernel still acknowledges (no TCP timeout), its router sends nothing: the silence limit ends it."""
    net, (hub, *spokes) = star(4)
    run_at_deadlines(net, 3, hub)
    victim = spokes[1]
    net.hung.add(net.addr_of(victim))
    hung_at = net.now
    name = victim.identity.name
    while any(c.remote.name == name for c in hub.live_connections()):
        run_at_deadlines(net, 0.01, hub)
        assert net.now - hung_at < hub.config.heartbeat_timeout + 2
    assert net.now - hung_at <= hub.config.heartbeat_timeout + 0.02
    assert len(hub.live_connections()) == 2


def test_execute_wakes_the_sleeping_ticker_when_the_mesh_has_work_now():
    class Mesh:
        due = float("inf")

        def next_deadline(self) -> float:
            return self.due

    class Dispatch:
        def run(self, actions, now):
            return []

    class Dataplane:
        def wants_tick(self) -> bool:
            return False
    r = Router.__new__(Router)
    r.mesh, r.dispatch, r.transports, r.clock = Mesh(), Dispatch(), {}, time.monotonic
    r.dataplane = Dataplane()
    r._sleeper, r._wake_at = None, 0.0

    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        task = loop.create_task(r._sleep(loop, time.monotonic() + 60))
        await asyncio.sleep(0)
        r.execute([])                     # nothing due sooner: it sleeps on
        await asyncio.sleep(0)
        still = not task.done()
        r.mesh.due = 0.0                  # e.g. gossip arrived: routes to recompute
        r.execute([])
        await asyncio.wait_for(task, 5)
        return still, task.done()
    assert asyncio.run(main()) == (True, True)


def dataplane() -> dpmod.Dataplane:
    dp = dpmod.Dataplane(dpmod.DataplaneConfig(fastdp=False), "02:00:00:00:00:01")
    dp._filter_peers = frozenset()

    class Engine:
        drops: dict = {}

        def dead_threads(self) -> dict:
            return {}

        def publish(self, view) -> None:
            pass
    dp.engine = Engine()
    return dp


def test_dataplane_deadline_follows_changes_and_its_timers(monkeypatch):
    dp = dataplane()
    assert dp.next_deadline() == 0.0                  # not synced yet
    dp.sync(100.0)
    assert dp.next_deadline() == 130.0                # only the MAC table's expiry pass is due (sleeve only)
    dp.on_peers(frozenset({"x"}))
    assert dp.next_deadline() == 130.0
    dp.on_routes(dp._routes)
    assert dp.next_deadline() == 0.0                  # the routes changed: the next tick publishes them
    dp.sync(100.5)
    dp._grace["192.0.2.9"] = (None, 160.0)
    assert dp.next_deadline() == 101.5                # a grace period to end: checked every GRACE_CHECK
    dp._netlink.shutdown(wait=True)


def test_the_source_filter_counter_is_read_only_when_asked(monkeypatch):
    reads = []
    monkeypatch.setattr(dpmod.udpfilter, "dropped", lambda: reads.append(1) or 7)
    dp = dataplane()
    for t in range(50):                               # 5 s of ticks: no nft subprocess
        dp.sync(100.0 + t / 10)
    dp._netlink.submit(lambda: None).result()
    assert reads == []
    dp.drop_counts()                                  # a report or a metrics scrape asks
    dp._netlink.submit(lambda: None).result()
    assert reads == [1] and dp.drop_counts().get("filtered_source") == 7
    dp._netlink.submit(lambda: None).result()
    assert reads == [1]                               # asked again within FILTER_REFRESH: no new read
    dp._netlink.shutdown(wait=True)


def test_a_fast_path_ticks_only_at_its_deadlines_coming_up_steady_or_broken():
    dp = dataplane()
    dp.fastdp = True
    dp.sync(100.0)
    dp._next_hb = 100.5                               # (sync sends fast-path heartbeats only with a socket)
    path = dpmod.fastdp.PathState("192.0.2.2", "02:00:00:00:00:02", last_rx=100.0, remote_ok_at=100.0,
                                  remote_ok=True, active=False, told=True, told_at=100.0)
    dp.decider.paths["peer"] = path
    assert dp.next_deadline() == 100.5                 # coming up: decided on the syncs the heartbeats bring
    path.active, path.proof_at = False, 100.2          # broken (judged at 101.51): no 100 ms ticks for it,
    dp._last_sync, dp._next_hb = 102.0, 103.0
    assert dp.next_deadline() == 103.0                 # however long it stays so: the heartbeats' tick
    path.proof_at = 0.0
    dp._last_sync, dp._next_hb = 100.0, 100.5
    path.active = True
    assert dp.next_deadline() == 100.5                 # steady: the next fast-path heartbeat send
    dp._next_hb = 103.0
    assert dp.next_deadline() == 100.0 + dpmod.fastdp.ASK_AFTER + 0.01   # quiet by then: the peer is asked
    path.asked_at = dp._last_sync = path.told_at = 101.32   # asked, no answer (silent on TCP too): nothing to
    assert dp.next_deadline() == 103.0                 # do until its router talks: no spin, the next send
    path.proof_at = 101.5                              # it answered: its heartbeat has REPLY_GRACE
    assert dp.next_deadline() == 101.5 + dpmod.fastdp.REPLY_GRACE + 0.01
    path.proof_at = 0.0
    dp._last_sync = path.told_at = 100.0
    assert not dp.wants_tick()
    dp.on_datapath_message("peer", dpmod.fastdp.status_message(False))   # the peer stopped hearing us
    assert dp.wants_tick() and dp.next_deadline() == 0.0
    dp._netlink.shutdown(wait=True)
