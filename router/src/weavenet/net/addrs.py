"""Address helpers shared by attach (ethwe in a container) and expose (the bridge on the host)."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
from collections.abc import Iterable

from pyroute2.netlink.exceptions import NetlinkError

Iface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

log = logging.getLogger(__name__)


def parse_cidr(cidr: str) -> Iface:
    """Validate an address-with-prefix meant for an interface ("10.0.0.1/24")."""
    if not isinstance(cidr, str) or "/" not in cidr:
        raise ValueError(f"bad CIDR {cidr!r}: expected ADDRESS/PREFIXLEN, e.g. 10.0.0.1/24")
    try:
        iface = ipaddress.ip_interface(cidr.strip())
    except ValueError:
        raise ValueError(f"bad CIDR {cidr!r}: expected ADDRESS/PREFIXLEN, e.g. 10.0.0.1/24") from None
    ip, net = iface.ip, iface.network
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback:
        raise ValueError(f"bad CIDR {cidr}: {ip} cannot be an interface address")
    if ip.version == 6 and ip.is_link_local:
        raise ValueError(f"bad CIDR {cidr}: link-local addresses are managed by the kernel")
    if net.num_addresses > 2 and ip == net.network_address:
        raise ValueError(f"bad CIDR {cidr}: {ip} is the network address of {net}")
    if ip.version == 4 and net.num_addresses > 2 and ip == net.broadcast_address:
        raise ValueError(f"bad CIDR {cidr}: {ip} is the broadcast address of {net}")
    return iface


def parse_cidrs(cidrs: Iterable[str]) -> list[Iface]:
    if isinstance(cidrs, str):
        raise ValueError(f"bad CIDR list {cidrs!r}: expected a list of strings")
    out: list[Iface] = []
    for c in cidrs:
        iface = parse_cidr(c)
        if iface not in out:
            out.append(iface)
    return out


def list_addresses(ipr, index: int) -> list[Iface]:
    """Addresses on a link, without the IPv6 link-local one the kernel adds by itself."""
    out = []
    for a in ipr.get_addr(index=index):
        # IFA_LOCAL is the address for IPv4 (IFA_ADDRESS is the peer on point-to-point links).
        ip = a.get("IFA_LOCAL") or a.get("IFA_ADDRESS")
        iface = ipaddress.ip_interface(f"{ip}/{a['prefixlen']}")
        if not (iface.version == 6 and iface.ip.is_link_local):
            out.append(iface)
    return out


def conflict(present: list[Iface], iface: Iface) -> Iface | None:
    """An address already on the link with the same IP but another prefix (a user mistake)."""
    return next((p for p in present if p.ip == iface.ip and p != iface), None)


def add_address(ipr, index: int, iface: Iface, ifname: str = "") -> None:
    spec = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    if iface.version == 4 and iface.network.num_addresses > 2:
        spec["broadcast"] = str(iface.network.broadcast_address)  # like `ip addr add ... brd +`
    try:
        ipr.addr("add", **spec)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise RuntimeError(f"cannot add {iface} to {ifname or f'link #{index}'}: {os.strerror(e.code)}") from None


def del_address(ipr, index: int, iface: Iface, ifname: str = "") -> bool:
    try:
        ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        return True
    except NetlinkError as e:
        if e.code in (errno.EADDRNOTAVAIL, errno.ENOENT):
            return False
        raise RuntimeError(f"cannot remove {iface} from {ifname or f'link #{index}'}: {os.strerror(e.code)}") from None


def promote_secondaries(ifname: str) -> None:
    """Make removing an IPv4 address keep the others of its subnet.

    By default the kernel deletes every secondary address of a subnet along with its primary, so
    detaching 10.0.0.1/24 would silently take 10.0.0.5/24 with it. /proc/sys/net belongs to the
    namespace of the calling *thread*, so this works from a ``run_in_netns`` thread.

    Best effort: where /proc/sys is read-only (the router inside a container without
    ``systempaths=unconfined``) ``remove_addresses`` still puts back any address the kernel dropped.
    """
    try:
        with open(f"/proc/sys/net/ipv4/conf/{ifname}/promote_secondaries", "w") as f:
            f.write("1")
    except OSError as e:
        log.debug("cannot set promote_secondaries on %s: %s", ifname, e.strerror)


def remove_addresses(ipr, index: int, doomed: list[Iface]) -> list[Iface]:
    """Delete ``doomed`` and return what is left; re-adds any address the kernel dropped alongside."""
    before = list_addresses(ipr, index)
    for iface in doomed:
        del_address(ipr, index, iface)
    expected = [a for a in before if a not in doomed]
    left = list_addresses(ipr, index)
    lost = [a for a in expected if a not in left]
    for iface in lost:
        add_address(ipr, index, iface)
    return list_addresses(ipr, index) if lost else left
