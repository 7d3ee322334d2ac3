"""The weave bridge, its VXLAN port, bridge port flags, and the VXLAN/bridge forwarding databases.

Layout (as in weave's fastdp): containers' veths, the router's TAP and a VXLAN device are ports of
one Linux bridge. The TAP and the VXLAN port are *isolated*: they talk to container ports but
never to each other, so a frame the router injected is not flooded back out over VXLAN and vice
versa. The VXLAN device has no remote/group: the router programs its FDB (one all-zero "default"
entry per peer for broadcast/unknown traffic, plus unicast entries).
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from . import fdbdump
from .links import (
    check_ifname,
    check_ip,
    check_mac,
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

ZERO_MAC = "00:00:00:00:00:00"
NTF_SELF = ndmsg.NTF_SELF
NTF_MASTER = ndmsg.NTF_MASTER
NUD_PERMANENT = ndmsg.NUD_PERMANENT
NUD_NOARP = ndmsg.NUD_NOARP

# Public flag names (as `bridge link set` spells them) -> pyroute2 brport keywords (IFLA_BRPORT_*).
PORT_FLAGS = {
    "isolated": "isolated",
    "learning": "learning",
    "flood": "unicast_flood",
    "mcast_flood": "mcast_flood",
    "bcast_flood": "bcast_flood",
}


def ensure_bridge(name: str = "weave", mtu: int = 1376) -> int:
    """Create the bridge if missing, set its MTU and bring it up; return its ifindex."""
    check_ifname(name)
    check_mtu(mtu)
    with iproute() as ipr:
        link = get_link(ipr, name)
        if link is None:
            _add_link(ipr, ifname=name, kind="bridge")
            link = require_link(ipr, name, kind="bridge")
            # Pin the random MAC the bridge was born with: otherwise the kernel keeps re-deriving it
            # from the lowest port MAC, and the exposed host address changes MAC as containers come
            # and go. Setting it marks it "set by user", which the kernel then leaves alone.
            ipr.link("set", index=link["index"], address=link_mac(link))
        link = require_link(ipr, name, kind="bridge")
        # An explicitly set bridge MTU sticks (the kernel stops deriving it from the ports).
        with netlink_errors(f"cannot set up bridge {name}"):
            ipr.link("set", index=link["index"], mtu=mtu, state="up")
        return link["index"]


def link_mac_of(name: str) -> str | None:
    with iproute() as ipr:
        link = get_link(ipr, name)
        return None if link is None else link_mac(link)


def ensure_vxlan(name: str = "vxlan-6784", bridge: str = "weave", port: int = 6784, vni: int = 6784,
                 mtu: int = 1376) -> str:
    """Create (or fix up) the VXLAN port of the bridge; return its MAC address.

    A VXLAN device of that name with another VNI or UDP port is deleted and recreated: those
    cannot be changed in place, and the router reprograms the FDB at start anyway.
    """
    check_ifname(name)
    check_mtu(mtu)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"bad VXLAN UDP port {port!r}: expected 1..65535")
    if not isinstance(vni, int) or not 0 <= vni <= 0xFFFFFF:
        raise ValueError(f"bad VNI {vni!r}: expected 0..16777215")
    with iproute() as ipr:
        br = require_link(ipr, bridge, kind="bridge")["index"]
        link = get_link(ipr, name)
        if link is not None and link_kind(link) != "vxlan":
            raise RuntimeError(f"link {name} exists and is a {link_kind(link) or 'plain device'}, not a vxlan")
        if link is not None and not _vxlan_matches(link, port, vni):
            delete_link_index(ipr, link["index"])
            link = None
        if link is None:
            # No remote/group/local: the FDB says where frames go; the kernel binds UDP *:port.
            # Learning off: a datagram must never teach the device where a MAC lives (only the
            # router's static entries do), so a forged one cannot redirect traffic.
            _add_link(ipr, ifname=name, kind="vxlan", vxlan_id=vni, vxlan_port=port, vxlan_learning=0)
        link = require_link(ipr, name, kind="vxlan")
        # Going up binds UDP *:port: EADDRINUSE when something else holds the port.
        with netlink_errors(f"cannot set up {name} (UDP port {port})"):
            ipr.link("set", index=link["index"], mtu=mtu, master=br, state="up")
        apply_port_flags(ipr, link["index"], isolated=True, learning=True, flood=True, mcast_flood=True,
                         bcast_flood=True)
        wait_forwarding(ipr, link["index"])
        return link_mac(link)


def _vxlan_matches(link, port: int, vni: int) -> bool:
    data = ("linkinfo", "data")
    return (link.get((*data, "IFLA_VXLAN_ID")) == vni and link.get((*data, "IFLA_VXLAN_PORT")) == port
            and not link.get((*data, "IFLA_VXLAN_LEARNING")))  # an older, learning device is recreated


def _add_link(ipr, **spec) -> None:
    """link add that tolerates losing a creation race (EEXIST): the caller re-reads the link."""
    try:
        ipr.link("add", **spec)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise RuntimeError(f"cannot create {spec['kind']} {spec['ifname']}: {os.strerror(e.code)}") from None


def set_port_flags(ifname: str, **flags: bool) -> None:
    """Set bridge port flags (isolated, learning, flood, mcast_flood, bcast_flood) on a bridge port."""
    with iproute() as ipr:
        link = require_link(ipr, ifname)
        apply_port_flags(ipr, link["index"], **flags)


def apply_port_flags(ipr, index: int, **flags: bool) -> None:
    unknown = sorted(set(flags) - set(PORT_FLAGS))
    if unknown:
        raise ValueError(f"unknown bridge port flag(s) {', '.join(unknown)}: expected {', '.join(PORT_FLAGS)}")
    if not flags:
        return
    # brport("set") becomes RTM_NEWLINK with IFLA_INFO_SLAVE_KIND=bridge + IFLA_BRPORT_* slave data;
    # the kernel answers EOPNOTSUPP/EINVAL when the link is not enslaved to a bridge.
    try:
        ipr.brport("set", index=index, **{PORT_FLAGS[k]: int(bool(v)) for k, v in flags.items()})
    except NetlinkError as e:
        if e.code in (errno.EOPNOTSUPP, errno.EINVAL):
            raise RuntimeError(f"link #{index} is not a bridge port: cannot set {', '.join(flags)}") from None
        raise


def port_flags(ifname: str) -> dict[str, bool]:
    """The current bridge port flags of ``ifname`` (empty when it is not a bridge port)."""
    with iproute() as ipr:
        link = require_link(ipr, ifname)
    if link.get(("linkinfo", "slave_kind")) != "bridge":
        return {}
    return {name: bool(link.get(("linkinfo", "slave_data", "IFLA_BRPORT_" + attr.upper())))
            for name, attr in PORT_FLAGS.items()}


# --- VXLAN FDB (the device's own table: `bridge fdb ... dev VXLAN self`) ---------------------------


def fdb_append(vxlan: str, mac: str, dst: str) -> None:
    """`bridge fdb append MAC dev VXLAN dst DST self permanent`.

    NLM_F_APPEND lets several entries share a MAC (the all-zero default entry gets one remote per
    peer, and BUM frames are replicated to each). Appending an existing (mac, dst) is a no-op.
    """
    _fdb_change("append", vxlan, mac, dst)


def fdb_replace(vxlan: str, mac: str, dst: str) -> None:
    """`bridge fdb replace ...`: point a unicast MAC at a single dst (a MAC that moved peers)."""
    _fdb_change("replace", vxlan, mac, dst)


def fdb_delete(vxlan: str, mac: str, dst: str) -> None:
    """Delete one (mac, dst) entry; a missing entry is not an error."""
    _fdb_change("del", vxlan, mac, dst)


def _fdb_change(command: str, vxlan: str, mac: str, dst: str) -> None:
    mac, dst = check_mac(mac), check_ip(dst)
    with iproute() as ipr:
        index = require_link(ipr, vxlan, kind="vxlan")["index"]
        _fdb_request(ipr, command, index, mac, dst)


def _fdb_request(ipr, command: str, index: int, mac: str, dst: str) -> None:
    # Explicit state and NTF_SELF (the VXLAN device's own FDB, not the bridge's): pyroute2's fdb()
    # only defaults them for add/append/del, and a "replace" without NTF_SELF lands in the bridge.
    try:
        ipr.fdb(command, ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)
    except NetlinkError as e:
        if not (command == "del" and e.code == errno.ENOENT) and not (command == "append" and e.code == errno.EEXIST):
            raise


def fdb_apply(vxlan: str, replace: list[tuple[str, str]], delete: list[tuple[str, str]]) -> None:
    """Many unicast entry changes over one netlink socket: deletions first, then replacements."""
    with iproute() as ipr:
        index = require_link(ipr, vxlan, kind="vxlan")["index"]
        for command, entries in (("del", delete), ("replace", replace)):
            for mac, dst in entries:
                _fdb_request(ipr, command, index, check_mac(mac), check_ip(dst))


def fdb_entries(vxlan: str) -> list[tuple[str, str]]:
    """(mac, dst) of every VXLAN FDB entry, programmed or learned."""
    with iproute() as ipr:
        index = require_link(ipr, vxlan, kind="vxlan")["index"]
        return [(mac, dst) for mac, dst, _ in _vxlan_fdb(index)]


def _vxlan_fdb(index: int) -> list[tuple[str, str, int]]:
    # An AF_BRIDGE neighbour dump of a bridge port mixes the bridge's entries for that port (no
    # NDA_DST) with the VXLAN device's own entries (flag NTF_SELF, NDA_DST = remote).
    # Read with fdbdump: the kernel dumps this port only, struct decodes it.
    return [(n.mac, n.dst, n.state) for n in fdbdump.bridge_fdb(0, port=index)
            if n.ifindex == index and n.dst and n.flags & NTF_SELF]


def fdb_flush_dst(vxlan: str, dst: str, keep: frozenset[str] = frozenset()) -> int:
    """Delete every VXLAN FDB entry pointing at ``dst`` (programmed and learned) but those for the MACs in
    ``keep``; return how many."""
    dst = check_ip(dst)
    keep = frozenset(check_mac(m) for m in keep)
    with iproute() as ipr:
        index = require_link(ipr, vxlan, kind="vxlan")["index"]
        doomed = [mac for mac, d, _ in _vxlan_fdb(index) if d == dst and mac not in keep]
        for mac in doomed:
            _fdb_request(ipr, "del", index, mac, dst)
        return len(doomed)


# --- bridge FDB (the bridge's learned MAC -> port table) ------------------------------------------


def bridge_fdb_flush_port(port_ifname: str, macs: set[str] | None = None) -> int:
    """Forget MACs the bridge learned on a port (all, or only ``macs``); return how many.

    Permanent/static entries (the port's own address, anything configured) are kept.
    """
    wanted = None if macs is None else {check_mac(m) for m in macs}
    with iproute() as ipr:
        index = require_link(ipr, port_ifname)["index"]
        doomed = []
        for n in fdbdump.bridge_fdb(0, port=index):   # (this port's entries only, decoded with struct)
            if n.ifindex != index or n.flags & NTF_SELF or n.state & (NUD_PERMANENT | NUD_NOARP):
                continue
            if wanted is None or n.mac in wanted:
                doomed.append((n.mac, n.vlan))
        count = 0
        for mac, vlan in doomed:
            spec = {"vlan": vlan} if vlan else {}
            try:
                ipr.fdb("del", ifindex=index, lladdr=mac, flags=NTF_MASTER, **spec)
                count += 1
            except NetlinkError as e:
                if e.code != errno.ENOENT:  # aged out meanwhile
                    raise
        return count


class BridgeIds(NamedTuple):
    index: int
    mac: str
    skip: frozenset[int]      # the bridge itself and its uplinks: no MAC learned there is local


def bridge_ids(bridge: str, uplinks: list[str]) -> BridgeIds:
    """What `local_macs_of` needs, looked up once (the links outlive many reads; a read that fails asks again)."""
    with iproute() as ipr:
        br = require_link(ipr, bridge, kind="bridge")
        skip = {br["index"]} | {link["index"] for name in uplinks if (link := get_link(ipr, name)) is not None}
        return BridgeIds(br["index"], link_mac(br), frozenset(skip))


def local_macs_of(ids: BridgeIds, cap: int) -> frozenset[str]:
    """MACs that live on this host: what the bridge learned on its local ports (containers' veths,
    not the uplinks towards other hosts), plus the bridge's own MAC (exposed host, DNS). At most
    ``cap``; unicast only (a learned multicast source would be a broken or hostile container)."""
    out = {ids.mac}
    for n in fdbdump.bridge_fdb(ids.index):   # (fdbdump: why not pyroute2's dump)
        if (n.master != ids.index or n.ifindex in ids.skip or n.flags & NTF_SELF
                or n.state & (NUD_PERMANENT | NUD_NOARP) or int(n.mac[:2], 16) & 1):
            continue
        out.add(n.mac)
        if len(out) >= cap:
            break
    return frozenset(out)


def local_macs(bridge: str, uplinks: list[str], cap: int) -> frozenset[str]:
    return local_macs_of(bridge_ids(bridge, uplinks), cap)


def delete_link(name: str) -> None:
    """Delete a link; a missing one is fine."""
    with iproute() as ipr:
        link = get_link(ipr, name)
        if link is not None:
            delete_link_index(ipr, link["index"])

