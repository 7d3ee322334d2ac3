"""weave expose / hide: give the host (the router's namespace) an address on the overlay.

The address goes on the bridge device itself, so the host reaches containers through the bridge
like any other port.
"""

from __future__ import annotations

from .addrs import add_address, conflict, list_addresses, parse_cidr, promote_secondaries, remove_addresses
from .arp import send_gratuitous_arp
from .links import check_ifname, get_link, iproute, link_mac, oper_up, require_link, wait_link

BRIDGE_UP_TIMEOUT = 2.0


def expose(cidr: str, bridge: str = "weave") -> bool:
    """Add ``cidr`` to the bridge; True if added, False if it was already there."""
    iface = parse_cidr(cidr)
    check_ifname(bridge)
    with iproute() as ipr:
        link = require_link(ipr, bridge, kind="bridge")
        present = list_addresses(ipr, link["index"])
        if iface in present:
            return False
        other = conflict(present, iface)
        if other is not None:
            raise ValueError(f"{iface.ip} is already exposed as {other}: hide it first")
        promote_secondaries(bridge)
        add_address(ipr, link["index"], iface, bridge)
        # A bridge that just got its first port may not transmit yet (its qdisc is attached by the
        # kernel's linkwatch worker, asynchronously): give it a moment, unless it has no carrier.
        if iface.version == 4 and link.get("IFLA_CARRIER"):
            wait_link(ipr, link["index"], oper_up, BRIDGE_UP_TIMEOUT)
    if iface.version == 4:
        send_gratuitous_arp(bridge, link_mac(link), str(iface.ip))
    return True


def hide(cidr: str, bridge: str = "weave") -> bool:
    """Remove the address with ``cidr``'s IP from the bridge; True if it was there."""
    iface = parse_cidr(cidr)
    check_ifname(bridge)
    with iproute() as ipr:
        index = require_link(ipr, bridge, kind="bridge")["index"]
        doomed = [a for a in list_addresses(ipr, index) if a.ip == iface.ip]
        if doomed:
            remove_addresses(ipr, index, doomed)
        return bool(doomed)


def exposed(bridge: str = "weave") -> list[str]:
    """CIDRs on the bridge ([] when there is no bridge), without the host-local service address."""
    check_ifname(bridge)
    with iproute() as ipr:
        link = get_link(ipr, bridge)
        return [] if link is None else [str(a) for a in list_addresses(ipr, link["index"])
                                        if not (a.ip.is_link_local and a.network.prefixlen == 32)]


def ensure_service_address(ip: str, bridge: str = "weave") -> None:
    """A link-local /32 on the bridge for host services (weaveDNS). No announcement: it must stay on
    this host (every host has the same one), which the isolation rules enforce."""
    iface = parse_cidr(f"{ip}/32")
    with iproute() as ipr:
        index = require_link(ipr, bridge, kind="bridge")["index"]
        if iface not in list_addresses(ipr, index):
            add_address(ipr, index, iface, bridge)
