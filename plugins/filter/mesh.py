# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters used by the weavenet.mesh roles: peer lists from inventory order, addresses in a subnet."""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError


def _lookup(hostvars, host):
    """A host's address from its inventory variables: weave_peer_address, else ansible_host, else None."""
    if hostvars is None:
        return None
    try:
        hv = hostvars[host]
    except KeyError:
        return None
    for key in ("weave_peer_address", "ansible_host"):
        try:
            value = hv[key]
        except (KeyError, AttributeError, TypeError):
            continue
        if value:
            return str(value)
    return None


def weave_peer_addresses(hosts, addresses=None, hostvars=None):
    """Each host's peer address: addresses[host], else its weave_peer_address / ansible_host, else its name."""
    addresses = addresses or {}
    return [str(addresses.get(h) or _lookup(hostvars, h) or h) for h in list(hosts or [])]


def weave_peers(hosts, host, addresses=None, mode="chain", hostvars=None):
    hosts = list(hosts or [])
    if host not in hosts:
        raise AnsibleFilterError("weave_peers: host %s is not in the mesh group %s" % (host, hosts))
    if mode not in ("chain", "previous", "all"):
        raise AnsibleFilterError("weave_peers: mode must be chain, previous or all, not %r" % (mode,))
    addrs = dict(zip(hosts, weave_peer_addresses(hosts, addresses, hostvars)))
    idx = hosts.index(host)
    if mode == "chain":
        chosen = hosts[:idx]
    elif mode == "previous":
        chosen = hosts[idx - 1:idx] if idx > 0 else []
    else:
        chosen = [h for h in hosts if h != host]
    return [addrs[h] for h in chosen]


def weave_address(subnet, host_number):
    """weave_address('10.0.0.0/24', 5) -> '10.0.0.5/24': host number N of the subnet, with its prefix."""
    try:
        net = ipaddress.ip_network(str(subnet), strict=True)
    except ValueError as e:
        raise AnsibleFilterError("weave_address: invalid subnet %r: %s" % (subnet, e))
    try:
        n = int(host_number)
    except (TypeError, ValueError):
        raise AnsibleFilterError("weave_address: host number must be an integer, not %r" % (host_number,))
    if not 0 < n < net.num_addresses - (1 if net.version == 4 and net.prefixlen < 31 else 0):
        raise AnsibleFilterError("weave_address: %d is not a host number in %s" % (n, net))
    return "%s/%d" % (net.network_address + n, net.prefixlen)


def weave_cidr_in(cidr, subnet):
    """True if the interface address `cidr` lies in `subnet` with the same prefix length."""
    try:
        iface = ipaddress.ip_interface(str(cidr))
        net = ipaddress.ip_network(str(subnet), strict=False)
    except ValueError:
        return False
    return iface.network == net


def weave_resolve(entries, subnets=None, require_declared=True):
    """['frontend:1', '10.10.0.2/24'] -> ['10.0.0.1/24', '10.10.0.2/24'] with subnets {'frontend': '10.0.0.0/24'}.

    An entry with a '/' is an explicit address; 'NAME:N' is host number N of subnet NAME. With require_declared,
    every address must lie in one of the subnets (same prefix length)."""
    subnets = subnets or {}
    if entries is None:
        return []
    if isinstance(entries, str):
        entries = [entries]
    out = []
    for entry in entries:
        entry = str(entry).strip()
        if entry.startswith("net:"):  # allocation by the router's IPAM: net:NAME -> net:CIDR
            spec = entry[4:]
            if spec in subnets:
                spec = str(ipaddress.ip_network(str(subnets[spec]), strict=False))
            elif spec != "default":
                try:
                    spec = str(ipaddress.ip_network(spec, strict=True))
                except ValueError:
                    raise AnsibleFilterError("weave_resolve: %r is neither net:SUBNET-NAME, net:CIDR nor net:default"
                                             % entry)
                if require_declared and spec not in [str(ipaddress.ip_network(str(v), strict=False))
                                                     for v in subnets.values()]:
                    raise AnsibleFilterError("weave_resolve: %s is not one of this mesh's subnets" % entry)
            out.append("net:" + spec)
            continue
        if "/" in entry:
            try:
                cidr = str(ipaddress.ip_interface(entry))
            except ValueError:
                raise AnsibleFilterError("weave_resolve: %r is not an address with a prefix length" % entry)
        else:
            name, sep, number = entry.rpartition(":")
            if not sep or not name:
                raise AnsibleFilterError("weave_resolve: %r is neither CIDR nor SUBNET:N" % entry)
            if name not in subnets:
                raise AnsibleFilterError("weave_resolve: unknown subnet %r in %r (weave_subnets has: %s)"
                                         % (name, entry, ", ".join(sorted(subnets)) or "none"))
            cidr = weave_address(subnets[name], number)
        if require_declared and not any(weave_cidr_in(cidr, s) for s in subnets.values()):
            raise AnsibleFilterError("weave_resolve: %s is in none of this mesh's subnets (weave_subnets: %s)"
                                     % (cidr, ", ".join("%s=%s" % kv for kv in sorted(subnets.items())) or "none"))
        if cidr not in out:
            out.append(cidr)
    return out


class FilterModule(object):
    def filters(self):
        return {
            "weave_peers": weave_peers,
            "weave_peer_addresses": weave_peer_addresses,
            "weave_address": weave_address,
            "weave_cidr_in": weave_cidr_in,
            "weave_resolve": weave_resolve,
        }
