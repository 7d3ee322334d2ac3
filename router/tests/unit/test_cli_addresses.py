"""Weave's address flavours through a real Router (fakes only for the kernel and Docker): `ip:CIDR`,
`net:CIDR`, `net:default` on attach, detach, expose and hide, what each reports as added or removed, and
the lowest free address first."""

from __future__ import annotations

import asyncio

import pytest

from weavenet.ipam.spec import Explicit, parse_address_spec
from weavenet.weaver.attachments import EXPOSE_KEY

from .test_router_wiring import free_port, running

C = "netns:c1"


def test_ip_prefix_is_an_explicit_address():
    assert parse_address_spec("ip:10.2.1.1/24") == parse_address_spec("10.2.1.1/24")
    assert isinstance(parse_address_spec("ip:10.2.1.1/24"), Explicit)
    for bad in ("ip:", "ip:10.2.1.1", "ip:net:10.2.0.0/16", "ip:10.2.1.0/24"):
        with pytest.raises(ValueError, match="invalid address"):
            parse_address_spec(bad)


def test_attach_and_detach_by_flavour(tmp_path):
    async def main() -> None:
        async with running(tmp_path, "a", free_port()) as (a, host):
            r = await a.attach(C, ["ip:10.2.1.1/24", "net:default", "net:10.33.0.0/24"])
            added = r["added"]
            assert added[0] == "10.2.1.1/24"
            assert added[1] == "10.32.0.1/12"        # the lowest free address of the default subnet
            assert added[2] == "10.33.0.1/24"        # ... and of the subnet asked for
            assert host.links["/run/netns/c1"] == added
            r2 = await a.attach("netns:c2", [])
            assert r2["added"] == ["10.32.0.2/12"]   # next lowest

            r = await a.detach(C, ["net:10.33.0.0/24"])
            assert r["removed"] == ["10.33.0.1/24"] and "10.33.0.1/24" not in host.links["/run/netns/c1"]
            r = await a.detach(C, ["net:10.99.0.0/24"])          # nothing there: no error, nothing removed
            assert r["removed"] == [] and len(host.links["/run/netns/c1"]) == 2
            r = await a.detach(C, ["net:default"])
            assert r["removed"] == ["10.32.0.1/12"]
            assert "10.32.0.1/12" not in [str(i) for i in a.ipam.alloc.lookup(C)]   # the lease went back
            r = await a.detach(C, ["ip:10.2.1.1/24"])
            assert r["removed"] == ["10.2.1.1/24"] and "/run/netns/c1" not in host.links

            await a.attach(C, ["10.2.1.1/24", "10.2.2.1/24"])
            r = await a.detach(C, [])                              # no address: everything
            assert sorted(r["removed"]) == ["10.2.1.1/24", "10.2.2.1/24"] and "/run/netns/c1" not in host.links
            # The lowest free address again: 10.32.0.1 was given back.
            assert (await a.attach(C, []))["added"] == ["10.32.0.1/12"]
    asyncio.run(main())


def test_expose_and_hide_by_flavour(tmp_path):
    async def main() -> None:
        async with running(tmp_path, "a", free_port()) as (a, host):
            r = await a.expose([])                                  # none: net:default, from IPAM
            assert r["added"] == ["10.32.0.1/12"] and host.host_addrs == ["10.32.0.1/12"]
            assert [str(i) for i in a.ipam.alloc.lookup(EXPOSE_KEY)] == ["10.32.0.1/12"]
            a.workloads.forget_stale_leases()                       # the host's own lease is not stale
            assert [str(i) for i in a.ipam.alloc.lookup(EXPOSE_KEY)] == ["10.32.0.1/12"]
            r = await a.expose(["ip:10.2.1.254/24"])
            assert r["added"] == ["10.2.1.254/24"] and host.host_addrs == ["10.32.0.1/12", "10.2.1.254/24"]

            r = await a.expose(["net:10.40.0.0/24"], hide=True)     # nothing exposed there
            assert r["removed"] == [] and len(host.host_addrs) == 2
            r = await a.expose(["net:default"], hide=True)
            assert r["removed"] == ["10.32.0.1/12"] and host.host_addrs == ["10.2.1.254/24"]
            assert a.ipam.alloc.lookup(EXPOSE_KEY) == []           # the lease went back
            r = await a.expose(["ip:10.2.1.254/24"], hide=True)
            assert r["removed"] == ["10.2.1.254/24"] and host.host_addrs == []
    asyncio.run(main())


def test_bad_flavours_are_refused_before_anything_changes(tmp_path):
    async def main() -> None:
        async with running(tmp_path, "a", free_port()) as (a, host):
            for op in (lambda s: a.attach(C, s), lambda s: a.detach(C, s), lambda s: a.expose(s),
                       lambda s: a.expose(s, hide=True)):
                for bad in (["net:10.2.0.0"], ["ip:10.2.1.1"], ["10.2.1.1/24", "net:bogus"]):
                    with pytest.raises(ValueError):
                        await op(bad)
            assert host.links == {} and host.host_addrs == [] and a.ipam.alloc.allocations() == {}
    asyncio.run(main())
