"""Address arguments as users write them: `10.0.0.1/24` (or Weave's `ip:10.0.0.1/24`), `net:10.2.0.0/16`,
`net:default` or nothing."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_RANGE = ipaddress.IPv4Network("10.32.0.0/12")


@dataclass(frozen=True)
class Allocate:
    """Ask IPAM for an address in `subnet` (None: the default subnet)."""
    subnet: ipaddress.IPv4Network | None


@dataclass(frozen=True)
class Explicit:
    """A given address and prefix, used as is (claimed in IPAM when it lies in the allocation range)."""
    interface: ipaddress.IPv4Interface


def parse_cidr(text: str, what: str = "subnet") -> ipaddress.IPv4Network:
    """A network in CIDR form with no host bits set, e.g. for --ipalloc-range."""
    s = text.strip()
    if "/" not in s:
        raise ValueError(f"invalid {what} {text!r}: expected CIDR like 10.32.0.0/12")
    try:
        net = ipaddress.ip_network(s, strict=False)
    except ValueError as e:
        raise ValueError(f"invalid {what} {text!r}: {e}") from None
    if net.version != 4:
        raise ValueError(f"invalid {what} {text!r}: only IPv4 is supported")
    if ipaddress.ip_interface(s).ip != net.network_address:
        raise ValueError(f"invalid {what} {text!r}: host bits set (did you mean {net}?)")
    if net.prefixlen > 30:
        raise ValueError(f"invalid {what} {text!r}: /{net.prefixlen} is too small to allocate from (at most /30)")
    return net  # type: ignore[return-value]


def parse_address_spec(text: str) -> Allocate | Explicit:
    s = text.strip()
    if s in ("", "net:default"):
        return Allocate(None)
    if s.startswith("net:"):
        return Allocate(parse_cidr(s[4:], what=f"address spec {s!r}: subnet"))
    usage = "expected CIDR like 10.2.1.1/24, ip:CIDR, net:CIDR or net:default"
    if s.startswith("ip:"):
        s = s[3:]
    if "/" not in s:
        raise ValueError(f"invalid address {text!r}: {usage}")
    try:
        iface = ipaddress.ip_interface(s)
    except ValueError as e:
        reason = str(e).replace(f"{s!r} does not appear to be an IPv4 or IPv6 interface", usage)
        raise ValueError(f"invalid address {text!r}: {reason}") from None
    if iface.version != 4:
        raise ValueError(f"invalid address {text!r}: only IPv4 is supported")
    net = iface.network
    if net.prefixlen <= 30 and iface.ip in (net.network_address, net.broadcast_address):
        which = "network" if iface.ip == net.network_address else "broadcast"
        raise ValueError(f"invalid address {text!r}: that is the {which} address of {net}")
    return Explicit(iface)  # type: ignore[arg-type]
