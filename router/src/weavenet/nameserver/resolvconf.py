"""resolv.conf text: the host's upstream servers for forwarding, and the file a container gets."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def parse_resolv_conf(text: str, exclude: Iterable[str] = ()) -> list[str]:
    """The `nameserver` addresses in order, without duplicates and without `exclude` (our own listen
    addresses: forwarding to ourselves would loop). IPv6 zone suffixes (`fe80::1%eth0`) are kept."""
    skip = {str(ipaddress.ip_address(x.split("%", 1)[0])) for x in exclude}
    servers: list[str] = []
    for raw in text.splitlines():
        parts = raw.split("#", 1)[0].split(";", 1)[0].split()
        if len(parts) < 2 or parts[0] != "nameserver":
            continue
        try:
            ip = str(ipaddress.ip_address(parts[1].split("%", 1)[0]))
        except ValueError:
            continue  # glibc ignores malformed lines too
        addr = ip + parts[1][len(parts[1].split("%", 1)[0]):]
        if ip not in skip and addr not in servers:
            servers.append(addr)
    return servers


def container_resolv_conf(nameserver: str, domain: str, host_search: Iterable[str] = ()) -> str:
    """What a container started by `weave run` gets: our server, the weave domain searched first."""
    search = [domain.rstrip(".")] + [d for d in host_search if d.rstrip(".") != domain.rstrip(".")]
    return f"nameserver {nameserver}\nsearch {' '.join(search)}\noptions ndots:1\n"
