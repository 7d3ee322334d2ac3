"""Host routes, read to refuse an IPAM range that the host already routes somewhere else."""

from __future__ import annotations

import ipaddress

from .links import iproute


def overlapping_routes(network: ipaddress.IPv4Network, ignore_dev: str = "weave") -> list[str]:
    """Routes of the main table that overlap ``network``, as "DST dev IFNAME" (the default route and
    routes on our own bridge don't count: exposing the host adds the latter)."""
    out = []
    with iproute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for r in ipr.get_routes(family=2, table=254):
            plen = r["dst_len"]
            if plen == 0:
                continue
            dst = ipaddress.IPv4Network(f"{r.get_attr('RTA_DST')}/{plen}", strict=False)
            dev = names.get(r.get_attr("RTA_OIF"), "?")
            if dev != ignore_dev and dst.overlaps(network):
                out.append(f"{dst} dev {dev}")
    return out
