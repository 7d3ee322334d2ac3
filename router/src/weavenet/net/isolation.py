"""Subnet isolation and anti-spoofing on the weave bridge, in the kernel (nftables, bridge family).

All containers of a mesh share one layer-2 segment, so subnets alone isolate nothing: a container
could add a route or an ARP entry by hand. The rules close that, on every host, per bridge port:

* from a container (its ``vethwepl…`` port): only its own MAC as source, only its own IPs as source
  (ARP sender addresses too), only IPv4 and ARP. A container cannot speak for an address it was not
  given, so the source address of every frame on the mesh can be trusted by the next rule;
* to a container: only IPv4/ARP whose source lies in one of the container's subnets, whether the
  frame comes from a local container, from another host (TAP / VXLAN ports) or from the host itself;
* to the host (frames ending at the bridge device): only from the subnets the host is exposed on.

The ruleset is rendered from the router's attachment records (pure ``render``) and replaced in one
``nft -f`` transaction, so there is never a moment with half of it in place.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass

TABLE = "weavenet"


@dataclass(frozen=True)
class Port:
    ifname: str          # host end of the container's veth
    mac: str             # the container's ethwe MAC
    cidrs: tuple[str, ...]   # its addresses, with prefix length


def _set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _networks(cidrs: list[str] | tuple[str, ...]) -> list[str]:
    nets = sorted({ipaddress.ip_interface(c).network for c in cidrs if ipaddress.ip_interface(c).version == 4},
                  key=lambda n: (int(n.network_address), n.prefixlen))
    # nft refuses overlapping elements in one set: keep only the widest of nested networks.
    keep: list[ipaddress.IPv4Network] = []
    for n in sorted(nets, key=lambda n: n.prefixlen):
        if not any(n.subnet_of(k) for k in keep):
            keep.append(n)
    return [str(n) for n in sorted(keep, key=lambda n: int(n.network_address))]


def _ips(cidrs: tuple[str, ...]) -> list[str]:
    return sorted({str(ipaddress.ip_interface(c).ip) for c in cidrs if ipaddress.ip_interface(c).version == 4},
                  key=lambda s: int(ipaddress.ip_address(s)))


def _chain_name(prefix: str, ifname: str) -> str:
    return f"{prefix}_{ifname}".replace("-", "_")


def _port_chains(p: Port, service: str | None) -> list[str]:
    ips, nets = _ips(p.cidrs), _networks(p.cidrs)
    sender = _set([*ips, "0.0.0.0"])   # 0.0.0.0: ARP probes (address conflict detection)
    inbound = [f"  chain {_chain_name('from', p.ifname)} {{",
               f"    ether saddr != {p.mac} drop",
               f"    ether type arp arp saddr ether != {p.mac} drop",
               f"    ether type arp arp saddr ip != {sender} drop",
               f"    ether type ip ip saddr != {_set(ips)} drop" if ips else "    ether type ip drop",
               "    ether type != { ip, arp } drop",
               "  }"]
    # The host's service address (weaveDNS) may talk to every local container: only the host can
    # send from it (containers are pinned to their own addresses, uplinks drop it).
    extra = [service] if service else []
    allowed = _set([*nets, "0.0.0.0", *extra])
    outbound = [f"  chain {_chain_name('to', p.ifname)} {{",
                f"    ether type arp arp saddr ip != {allowed} drop",
                f"    ether type ip ip saddr != {_set([*nets, *extra])} drop" if nets else "    ether type ip drop",
                "    ether type != { ip, arp } drop",
                "  }"]
    return inbound + outbound


def render(uplinks: list[str], ports: list[Port], exposed: list[str], service: str | None = None) -> str:
    """The whole table, as an `nft -f` script that replaces any earlier version atomically.

    ``uplinks`` are the bridge's ports towards other hosts (TAP, VXLAN). Frames for the host are
    matched by input port (``meta ibrname`` would be neater, but not every kernel has it).
    ``service`` is the host-local address of weaveDNS (same on every host): containers may reach it
    on port 53, and neither it nor ARP about it crosses an uplink.
    """
    ports = sorted(ports, key=lambda p: p.ifname)
    lines = [f"table bridge {TABLE}", f"delete table bridge {TABLE}", f"table bridge {TABLE} {{"]
    for p in ports:
        lines += _port_chains(p, service)
    fwd = ["  chain forward {", "    type filter hook forward priority 0; policy accept;"]
    out = ["  chain output {", "    type filter hook output priority 0; policy accept;"]
    inp = ["  chain input {", "    type filter hook input priority 0; policy accept;"]
    for p in ports:
        name = f'"{p.ifname}"'
        fwd.append(f"    iifname {name} jump {_chain_name('from', p.ifname)}")
        fwd.append(f"    oifname {name} jump {_chain_name('to', p.ifname)}")
        out.append(f"    oifname {name} jump {_chain_name('to', p.ifname)}")
        inp.append(f"    iifname {name} jump {_chain_name('from', p.ifname)}")
    up = _set([f'"{n}"' for n in sorted(uplinks)])
    if service:
        fwd += [f"    oifname {up} arp daddr ip {service} drop", f"    oifname {up} ip daddr {service} drop",
                f"    iifname {up} arp saddr ip {service} drop", f"    iifname {up} ip saddr {service} drop"]
        out += [f"    oifname {up} arp saddr ip {service} drop", f"    oifname {up} ip saddr {service} drop"]
        if ports:
            local = _set([f'"{p.ifname}"' for p in sorted(ports, key=lambda p: p.ifname)])
            inp += [f"    iifname {local} arp daddr ip {service} accept",
                    f"    iifname {local} ip daddr {service} meta l4proto {{ tcp, udp }} th dport 53 accept"]
    nets = _networks(exposed)
    br = "iifname " + _set([f'"{n}"' for n in sorted([*uplinks, *(p.ifname for p in ports)])])
    if nets:
        allowed = _set([*nets, "0.0.0.0"])
        inp.append(f"    {br} ether type arp arp saddr ip != {allowed} drop")
        inp.append(f"    {br} ether type ip ip saddr != {_set(nets)} drop")
    else:
        inp.append(f"    {br} ether type {{ ip, arp }} drop")
    lines += fwd + ["  }"] + out + ["  }"] + inp + ["  }", "}"]
    return "\n".join(lines) + "\n"


def apply(ruleset: str) -> None:
    """Load a rendered ruleset into the calling process's network namespace."""
    r = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        err = (r.stderr.strip().splitlines() or ["nft failed"])[0]
        raise RuntimeError(f"cannot load isolation rules: {err}")


def remove() -> None:
    """Drop the table (weave reset); absent is fine."""
    subprocess.run(["nft", "delete", "table", "bridge", TABLE], capture_output=True, check=False)


def loaded() -> str:
    """The live table as nft prints it ('' if absent): for tests and `weave report`."""
    r = subprocess.run(["nft", "list", "table", "bridge", TABLE], capture_output=True, text=True, check=False)
    return r.stdout if r.returncode == 0 else ""
