"""Loop-level wiring of real Routers (mesh, IPAM, DNS, workloads, the Attachments actor, the ticker) built
by build_router, with fakes only where root or Docker would be needed (wiring_fakes). No root: peers talk
real TCP on localhost, on ephemeral ports."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from weavenet.api.metrics import make_registry, render
from weavenet.containers.client import ContainerInfo
from weavenet.weaver.app import Router, build_router
from weavenet.weaver.attachments import Attachments
from weavenet.weaver.config import RouterConfig
from weavenet.weaver.dns_service import DNS_ADDRESS
from weavenet.weaver.paths import Paths

from .wiring_fakes import FakeDataplane, FakeDocker, FakeHost

NAMES = {"a": "02:00:00:00:0a:01", "b": "02:00:00:00:0b:01"}
WEB = ContainerInfo(id="c" * 64, name="web", pid=4242, running=True, fqdn="web.weave.local")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


async def until(pred: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(tmp_path, tag: str, port: int, peers: tuple[str, ...] = (), fail_sync: bool = False,
                  ) -> AsyncIterator[tuple[Router, FakeHost]]:
    paths = Paths(tmp_path / tag / "run", tmp_path / tag / "data")
    paths.datadir.mkdir(parents=True)
    cfg = RouterConfig(peers=list(peers), nickname=tag, name=NAMES[tag], port=port, api_port=0)
    dataplane, host, docker = FakeDataplane(NAMES[tag], fail_sync), FakeHost(), FakeDocker(WEB)
    attachments = Attachments(paths.attachments_file, "weave", 1376, dataplane.uplinks(), docker=docker,  # type: ignore[arg-type]
                              service=DNS_ADDRESS, host=host)
    router = await build_router(cfg, paths, dataplane=dataplane, attachments=attachments,  # type: ignore[arg-type]
                                docker=docker, serve_dns=False)  # type: ignore[arg-type]
    await router.start()
    try:
        yield router, host
    finally:
        router.request_stop()
        await router.wait_stopped()


def established(router: Router, other: str) -> bool:
    return any(c["state"] == "established" and c.get("name") == NAMES[other]
               for c in router.report()["router"]["connections"])


def test_two_routers_mesh_over_tcp_and_a_container_name_reaches_the_other(tmp_path):
    async def main() -> None:
        pa, pb = free_port(), free_port()
        async with running(tmp_path, "a", pa) as (a, _), running(tmp_path, "b", pb, (f"127.0.0.1:{pa}",)) as (b, _):
            await until(lambda: established(a, "b") and established(b, "a"))
            r = await a.attach("web", ["net:default"])
            ip = str(ipaddress.ip_interface(r["allocated"][0]).ip)
            assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.32.0.0/12")
            assert [row["name"] for row in a.ps()] == ["web"]
            await until(lambda: b.workloads.dns_lookup("web") == [ip])   # DNS gossip over the real connection
            assert b.ps() == []
    asyncio.run(main())


def test_report_ps_and_metrics_answer_while_an_attach_is_blocked_in_the_actor(tmp_path):
    async def main() -> None:
        async with running(tmp_path, "a", free_port()) as (a, host):
            host.blocked.set()
            attach = asyncio.create_task(a.attach("netns:slow", ["10.2.1.1/24"]))
            assert await asyncio.to_thread(host.entered.wait, 5)
            expose = asyncio.create_task(a.expose(["10.2.1.254/24"]))   # queued behind it, in order
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            report, ps, metrics = a.report(), a.ps(), render(make_registry(a))
            took = time.perf_counter() - t0
            assert took < 0.5, took   # the attach sleeps up to 10 s: nothing here waited for it
            assert report["router"]["containers"] == [] and ps == [] and b"weave_connections" in metrics
            assert not attach.done() and not expose.done()
            assert a.attachments.snapshot.exposed == () and host.host_addrs == []
            host.release.set()
            assert (await attach)["addresses"] == ["10.2.1.1/24"]
            assert (await expose)["addresses"] == ["10.2.1.254/24"]
            ps = a.ps()
            assert [(r["id"], r["cidrs"]) for r in ps] == [("weave:expose", ["10.2.1.254/24"]),
                                                          ("netns:slow", ["10.2.1.1/24"])]
            assert a.report()["router"]["exposed"] == ["10.2.1.254/24"]
    asyncio.run(main())


def test_a_failing_attach_gives_back_its_lease_adds_no_name_and_leaves_the_kernel_as_it_was(tmp_path, caplog):
    async def main() -> None:
        async with running(tmp_path, "a", free_port()) as (a, host):
            first = (await a.attach("web", ["net:default"]))["allocated"][0]
            ip1 = str(ipaddress.ip_interface(first).ip)
            assert a.workloads.dns_lookup("web") == [ip1]
            host.fail_rules = True   # nft refuses the ruleset: the veth and addresses are already in place
            with pytest.raises(RuntimeError, match="nft"):
                await a.attach("web", ["10.32.9.9/12"])   # in the IPAM range: claimed, then given back
            with pytest.raises(RuntimeError, match="nft"):
                await a.attach("netns:b", ["net:default"])
            await asyncio.sleep(0.05)   # a late "attached" event would land by now
            assert a.ipam.alloc.lookup(WEB.id) == [ipaddress.IPv4Interface(first)]   # the fresh claim went back
            assert "netns:b" not in a.ipam.alloc.allocations()
            assert a.workloads.dns_lookup("web") == [ip1]   # no name for the address that never came
            assert host.links == {WEB.netns: [first]}
            assert [(r["id"], r["cidrs"]) for r in a.ps()] == [(WEB.id, [first])]
            saved = json.loads(a.paths.attachments_file.read_text())["records"]
            assert [(r["key"], r["cidrs"]) for r in saved] == [(WEB.id, [first])]
            host.fail_rules = False
            await a.attach("web", ["10.32.9.9/12"])   # and it works again
            assert sorted(a.workloads.dns_lookup("web")) == sorted([ip1, "10.32.9.9"])
            assert host.links == {WEB.netns: [first, "10.32.9.9/12"]}
    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert "cannot undo the attach" in caplog.text   # the rules failed again while undoing: said, not hidden


def test_a_failing_tick_does_not_stop_the_others(tmp_path, caplog):
    """a's data plane fails on every tick; the steps after it still run: b (a new neighbour) gets a's names and
    the connection stays up on heartbeats."""
    async def main() -> None:
        pa = free_port()
        async with running(tmp_path, "a", pa, fail_sync=True) as (a, _):
            ip = str(ipaddress.ip_interface((await a.attach("web", ["net:default"]))["allocated"][0]).ip)
            async with running(tmp_path, "b", free_port(), (f"127.0.0.1:{pa}",)) as (b, _):
                await until(lambda: established(a, "b") and established(b, "a"))
                await until(lambda: b.workloads.dns_lookup("web") == [ip])
                synced = a.dataplane.synced
                await asyncio.sleep(0.35)
                assert a.dataplane.synced >= synced + 2 and established(b, "a")   # still ticking, still up
    with caplog.at_level(logging.ERROR, "weavenet.weaver"):
        asyncio.run(main())
    assert len([r for r in caplog.records if "dataplane tick failed" in r.getMessage()]) == 1   # once a minute


def test_build_router_makes_every_part_at_once(tmp_path):
    """Nothing is left to fill in after construction: start() only does I/O."""
    async def main() -> None:
        paths = Paths(tmp_path / "run", tmp_path / "data")
        paths.datadir.mkdir(parents=True)
        dp = FakeDataplane(NAMES["a"])
        att = Attachments(paths.attachments_file, "weave", 1376, [], docker=FakeDocker(), host=FakeHost())  # type: ignore[arg-type]
        r = await build_router(RouterConfig(name=NAMES["a"], nickname="a"), paths, dataplane=dp,  # type: ignore[arg-type]
                               attachments=att, docker=FakeDocker(), serve_dns=False)  # type: ignore[arg-type]
        assert r.mesh.identity.name == r.name == NAMES["a"] == paths.peer_name_file.read_text().strip()
        assert r.workloads.attachments is att and r.workloads.ipam is r.ipam and r.workloads.dns is r.dns
        assert r.dns is not None and r.dns.domain == "weave.local."
        assert r.ps() == [] and r.report()["router"]["containers"] == []   # answers before start()
        att.close()
    asyncio.run(main())


def test_a_router_starved_of_its_loop_gives_its_peer_sockets_patient_kernel_limits(tmp_path):
    """Real sockets: the Patience the mesh returns reaches the connection's socket (set_patience)."""
    def timeouts(router: Router) -> set[int]:
        return {t.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
                for t in router.transports.values()}

    async def main() -> None:
        pa, pb = free_port(), free_port()
        async with running(tmp_path, "a", pa) as (a, _), running(tmp_path, "b", pb, (f"127.0.0.1:{pa}",)) as (b, _):
            await until(lambda: established(a, "b") and established(b, "a"))
            cfg = a.mesh.config
            assert timeouts(a) == timeouts(b) == {int(cfg.tcp_user_timeout * 1000)}
            time.sleep(cfg.heartbeat_interval + cfg.late_limit + 0.3)   # the loop (both routers') starved
            await until(lambda: timeouts(a) == timeouts(b) == {int(cfg.tcp_user_timeout_patient * 1000)})
            assert established(a, "b") and established(b, "a")
    asyncio.run(main())
