"""Plug a container's network namespace into the weave bridge (weave attach / detach).

The container gets one interface, ``ethwe``, the namespace end of a veth pair whose host end
(``vethwepl…``) is a port of the bridge. Addresses come and go with attach/detach; the pair is
deleted with the last address.
"""

from __future__ import annotations

import ipaddress
import os

from pyroute2.netlink.exceptions import NetlinkError

from .addrs import (
    Iface,
    add_address,
    conflict,
    del_address,
    list_addresses,
    parse_cidrs,
    promote_secondaries,
    remove_addresses,
)
from .arp import probe, send_gratuitous_arp
from .links import (
    check_ifname,
    check_mtu,
    delete_link_index,
    get_link,
    iproute,
    link_kind,
    link_mac,
    netlink_errors,
    require_link,
    wait_forwarding,
)
from .netns import check_netns_path, netns_id, run_in_netns

ETHWE = "ethwe"
PROBE_TIMEOUT = 0.3   # seconds listening for an answer to ARP probes; replies cross the mesh in ~1 ms
HOST_PREFIX = "vethwepl"  # weave's prefix for the host end of a container veth
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def host_veth_name(target_path: str) -> str:
    """``vethwepl`` + the namespace inode in base 36: unique among live namespaces, stable, 15 chars max.

    nsfs inode numbers fit in 32 bits, and 36**7 > 2**32, so 7 digits always suffice.
    """
    n, digits = netns_id(target_path), ""
    while True:
        n, r = divmod(n, 36)
        digits = _B36[r] + digits
        if not n:
            return HOST_PREFIX + digits[-7:]


def attach(target_path: str, cidrs: list[str], bridge: str = "weave", mtu: int = 1376,
           probe_timeout: float = PROBE_TIMEOUT, routes: tuple[str, ...] = ()) -> dict:
    """Give the namespace an ``ethwe`` on ``bridge`` (if it has none) carrying ``cidrs``.

    Idempotent: addresses already present are left alone. New IPv4 addresses are first probed for
    on the overlay (ARP, RFC 5227): one that someone answers for is refused. On failure, whatever
    this call created (the veth pair, addresses) is removed again. ``routes`` (host routes, e.g. to
    the host's DNS address) are pointed at ethwe.
    """
    ifaces = parse_cidrs(cidrs)
    check_ifname(bridge)
    check_mtu(mtu)
    check_netns_path(target_path)
    with iproute() as ipr:
        br = require_link(ipr, bridge, kind="bridge")["index"]
    ethwe = run_in_netns(target_path, _ethwe_link)
    created = None
    if ethwe is None:
        host = created = _create_pair(target_path, br, mtu)
    else:
        host = _replug_host_end(ethwe, br, mtu, target_path)
    try:
        mac, new = run_in_netns(target_path, _prepare_ethwe, ifaces, mtu)
        announce = [str(i.ip) for i in new if i.version == 4]
        if created or announce:
            # Frames (probes, announcements, the caller's first packets) sent before the bridge
            # forwards through the new port are dropped.
            with iproute() as ipr:
                wait_forwarding(ipr, require_link(ipr, host)["index"])
        if announce and probe_timeout > 0:
            taken = run_in_netns(target_path, probe, ETHWE, mac, announce, probe_timeout)
            if taken:
                ip = min(taken, key=ipaddress.IPv4Address)
                raise ValueError(f"{ip} is already in use on the mesh (answered by {taken[ip]})")
        addrs = run_in_netns(target_path, _add_ethwe_addresses, new, routes)
    except BaseException:
        if created:
            _delete_host_end(created)
        raise
    if announce:
        run_in_netns(target_path, _announce, mac, announce)
    return {"ifname": host, "mac": mac, "addresses": addrs}


def _ethwe_link() -> tuple[int, int | None, str | None] | None:
    """(index, peer index, kind) of ethwe in the calling thread's namespace, or None."""
    with iproute() as ipr:
        link = get_link(ipr, ETHWE)
    return None if link is None else (link["index"], link.get("IFLA_LINK"), link_kind(link))


def _create_pair(target_path: str, bridge_index: int, mtu: int) -> str:
    host = host_veth_name(target_path)
    with iproute() as ipr:
        stale = get_link(ipr, host)
        if stale is not None:  # its namespace end is not ethwe any more: leftover of an earlier attach
            delete_link_index(ipr, stale["index"])
        ns_fd = os.open(target_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The peer is born inside the namespace, already named ethwe: no temporary name to clash
            # with anything in the host namespace, and no window where it sits there unrenamed.
            # pyroute2 passes the peer dict through as raw IFLA_* attributes, so net_ns_fd is an fd.
            with netlink_errors(f"cannot create veth {host} / {ETHWE} in {target_path}"):
                ipr.link("add", ifname=host, kind="veth", mtu=mtu,
                         peer={"ifname": ETHWE, "net_ns_fd": ns_fd, "mtu": mtu})
        finally:
            os.close(ns_fd)
        try:
            index = require_link(ipr, host)["index"]
            with netlink_errors(f"cannot plug {host} into the bridge"):
                ipr.link("set", index=index, master=bridge_index, state="up")
        except BaseException:
            _delete_host_end(host)
            raise
    return host


def _replug_host_end(ethwe: tuple[int, int | None, str | None], bridge_index: int, mtu: int,
                     target_path: str) -> str:
    """ethwe exists already: find its peer here and make sure it is on the bridge and up."""
    index, peer, kind = ethwe
    if kind != "veth":
        raise RuntimeError(f"{ETHWE} in {target_path} is a {kind or 'plain device'}, not a veth")
    with iproute() as ipr:
        try:
            host = ipr.link("get", index=peer)[0] if peer else None
        except NetlinkError:
            host = None
        if host is None or link_kind(host) != "veth" or host.get("IFLA_LINK") != index:
            raise RuntimeError(f"{ETHWE} in {target_path} is not paired with a veth in this namespace")
        ipr.link("set", index=host["index"], mtu=mtu, master=bridge_index, state="up")
        return host.get("IFLA_IFNAME")


def _delete_host_end(host: str) -> None:
    with iproute() as ipr:
        link = get_link(ipr, host)
        if link is not None:
            delete_link_index(ipr, link["index"])


def _prepare_ethwe(ifaces: list[Iface], mtu: int) -> tuple[str, list[Iface]]:
    """Inside the namespace: lo and ethwe up, MTU; refuse clashes. Returns (mac, addresses to add)."""
    with iproute() as ipr:
        ipr.link("set", index=require_link(ipr, "lo")["index"], state="up")
        link = require_link(ipr, ETHWE)
        index = link["index"]
        present = list_addresses(ipr, index)
        for iface in ifaces:
            other = conflict(present, iface)
            if other is not None:
                raise ValueError(f"{iface.ip} is already on {ETHWE} as {other}: detach it first")
        ipr.link("set", index=index, mtu=mtu, state="up")
        return link_mac(link), [i for i in ifaces if i not in present]


def _add_ethwe_addresses(new: list[Iface], routes: tuple[str, ...]) -> list[str]:
    """Inside the namespace: add ``new`` to ethwe (all or none), then ``routes``; returns all its CIDRs."""
    with iproute() as ipr:
        index = require_link(ipr, ETHWE)["index"]
        promote_secondaries(ETHWE)
        _add_all(ipr, index, new)
        for dst in routes:
            with netlink_errors(f"cannot route {dst} via {ETHWE}"):
                ipr.route("replace", dst=dst, oif=index, scope=253)  # scope link: on the segment
        return [str(a) for a in list_addresses(ipr, index)]


def _announce(mac: str, ips: list[str]) -> None:
    for ip in ips:
        send_gratuitous_arp(ETHWE, mac, ip)


def _add_all(ipr, index: int, ifaces: list[Iface]) -> None:
    """Add every address or, if one fails, none (those added so far are removed)."""
    added: list[Iface] = []
    try:
        for iface in ifaces:
            add_address(ipr, index, iface, ETHWE)
            added.append(iface)
    except BaseException:
        for iface in added:
            del_address(ipr, index, iface, ETHWE)
        raise


def detach(target_path: str, cidrs: list[str] | None = None, bridge: str = "weave") -> dict:
    """Remove ``cidrs`` (all when None) from ethwe; delete ethwe (and its veth pair) once it has none.

    Addresses match by IP, whatever the prefix length. ``bridge`` is accepted for symmetry with
    attach: deleting the veth takes its bridge port with it.
    """
    ifaces = None if cidrs is None else parse_cidrs(cidrs)
    check_ifname(bridge)
    check_netns_path(target_path)
    return run_in_netns(target_path, _detach_inside, ifaces, target_path)


def _detach_inside(ifaces: list[Iface] | None, target_path: str) -> dict:
    with iproute() as ipr:
        link = get_link(ipr, ETHWE)
        if link is None:
            raise ValueError(f"nothing to detach: no {ETHWE} in {target_path}")
        index = link["index"]
        present = list_addresses(ipr, index)
        ips = None if ifaces is None else {i.ip for i in ifaces}
        doomed = [a for a in present if ips is None or a.ip in ips]
        left = remove_addresses(ipr, index, doomed) if doomed else present
        if not left:
            delete_link_index(ipr, index)  # the host end goes with it
        return {"addresses": [str(a) for a in left]}


def addresses(target_path: str) -> list[str]:
    """CIDRs on the namespace's ethwe ([] when it has none)."""
    check_netns_path(target_path)
    return run_in_netns(target_path, _addresses_inside)


def _addresses_inside() -> list[str]:
    with iproute() as ipr:
        link = get_link(ipr, ETHWE)
        return [] if link is None else [str(a) for a in list_addresses(ipr, link["index"])]


def ethwe_mac(target_path: str) -> str | None:
    """MAC of the namespace's ethwe, or None when it has none."""
    check_netns_path(target_path)
    return run_in_netns(target_path, _mac_inside)


def _mac_inside() -> str | None:
    with iproute() as ipr:
        link = get_link(ipr, ETHWE)
        return None if link is None else link_mac(link)
