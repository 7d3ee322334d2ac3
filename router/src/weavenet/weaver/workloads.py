"""Containers on this router, end to end: addresses from IPAM, the plumbing (Attachments), names in
weaveDNS, and what happens to all three when a container stops, restarts or goes away.

Runs on the event loop; the blocking parts (netlink, Docker, nft) are the Attachments actor's, awaited
here; its changes come back on the loop (``on_record``). The thread map: docs/architecture.md.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable

from ..ipam.spec import Allocate, Explicit, parse_address_spec
from ..mesh.core import Action
from ..nameserver.store import qualify
from .attachments import EXPOSE_KEY, Attachments, Row
from .dns_service import DnsService
from .ipam_service import IpamService

log = logging.getLogger("weavenet.workloads")


def _ips(cidrs: list[str]) -> list[str]:
    return [str(ipaddress.ip_interface(c).ip) for c in cidrs if ipaddress.ip_interface(c).version == 4]


class Workloads:
    def __init__(self, attachments: Attachments, ipam: IpamService, dns: DnsService | None,
                 execute: Callable[[list[Action]], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.attachments = attachments
        self.ipam = ipam
        self.dns = dns
        self.execute = execute
        self.clock = clock

    # --- attach / detach with addresses from IPAM ------------------------------------------------------
    async def attach(self, target: str, specs: list[str]) -> dict:
        """Addresses: explicit CIDRs (`ip:CIDR` too; claimed in IPAM when inside its range), `net:CIDR`,
        `net:default`; none at all means `net:default`. Fresh leases are given back if the attach fails.
        "added": the addresses of this call (all now on the container)."""
        wanted = [parse_address_spec(s) for s in specs] or [Allocate(None)]
        key = await self.attachments.key_of(target)
        cidrs, fresh, allocated = await self._take(key, wanted)
        try:
            result = await self.attachments.attach(target, cidrs)
        except BaseException:
            self._give_back(key, fresh)
            raise
        return {**result, "allocated": allocated, "added": cidrs}

    async def _take(self, key: str, wanted: list[Allocate | Explicit]) -> tuple[list[str], list[str], list[str]]:
        """(the CIDRs for `wanted`, the leases created for them, the addresses IPAM chose) for `key`."""
        cidrs: list[str] = []
        fresh: list[str] = []        # leases this call created: given back if it fails
        allocated: list[str] = []    # addresses IPAM chose (reported to the caller)
        try:
            for spec in wanted:
                now = self.clock()
                if isinstance(spec, Explicit):
                    cidr = str(spec.interface)
                    if self.ipam.owned(cidr):
                        new, actions = self.ipam.claim(key, spec.interface, now)
                        self.execute(actions)
                        if new:
                            fresh.append(cidr)
                else:
                    had = {str(i) for i in self.ipam.alloc.lookup(key)}
                    cidr = str(await self.ipam.allocate(key, spec.subnet, now, self.execute))
                    if cidr not in had:
                        fresh.append(cidr)
                        allocated.append(cidr)
                cidrs.append(cidr)
        except BaseException:
            self._give_back(key, fresh)
            raise
        return cidrs, fresh, allocated

    def _give_back(self, key: str, leases: list[str]) -> None:
        for c in leases:
            self.execute(self.ipam.release(key, c, self.clock()))

    def _chosen(self, wanted: list[Allocate | Explicit], have: list[str]) -> list[str]:
        """The CIDRs `wanted` names among `have`: explicit ones as given, `net:` ones by subnet (what was
        allocated there), in order, once each."""
        out: list[str] = []
        for spec in wanted:
            if isinstance(spec, Explicit):
                picked = [str(spec.interface)]
            else:
                net = spec.subnet or self.ipam.alloc.default_subnet
                picked = [c for c in have if ipaddress.ip_interface(c).ip in net]
            out += [c for c in picked if c not in out]
        return out

    async def detach(self, target: str, specs: list[str] | None) -> dict:
        """Take addresses off a container: CIDRs (`ip:CIDR` too), `net:CIDR`/`net:default` (the address
        allocated in that subnet: none there is no error), or everything when none are given. "removed":
        the addresses taken off."""
        if not specs:
            return await self.attachments.detach(target, None)
        wanted = [parse_address_spec(s) for s in specs]
        have: list[str] = []
        if any(isinstance(w, Allocate) for w in wanted):
            row = await self.attachments.record_or_none(target)
            have = list(row.cidrs) if row is not None else []
        cidrs = self._chosen(wanted, have)
        if not cidrs:
            return {"addresses": have, "removed": []}
        return await self.attachments.detach(target, cidrs)

    async def expose(self, specs: list[str], hide: bool) -> dict:
        """Give the host addresses on the bridge (CIDRs, `ip:CIDR`, `net:CIDR`, `net:default`; none means
        `net:default`, from IPAM under the name weave:expose), or take them off (hide: the same forms).
        "added" / "removed": the addresses of this call."""
        wanted = [parse_address_spec(s) for s in specs] or [Allocate(None)]
        if hide:
            exposed = list(self.attachments.snapshot.exposed)
            cidrs = self._chosen(wanted, exposed)
            if not cidrs:
                return {"addresses": exposed, "removed": []}
            result = await self.attachments.expose(cidrs, hide=True)
            self._give_back(EXPOSE_KEY, [c for c in result["removed"] if self.ipam.owned(c)])
            return result
        cidrs, fresh, allocated = await self._take(EXPOSE_KEY, wanted)
        try:
            result = await self.attachments.expose(cidrs, hide=False)
        except BaseException:
            self._give_back(EXPOSE_KEY, fresh)
            raise
        return {**result, "allocated": allocated}

    # --- lifecycle: leases and names follow the records ------------------------------------------------
    def on_record(self, event: str, rec: Row, cidrs: list[str]) -> None:
        """On the loop: the Attachments actor changed a record (see Attachments for the events)."""
        now = self.clock()
        actions: list[Action] = []
        if event == "attached":
            for c in cidrs:   # explicit addresses, and leases re-learnt after a restart
                if self.ipam.owned(c):
                    try:
                        actions += self.ipam.claim(rec.key, ipaddress.IPv4Interface(c), now)[1]
                    except ValueError as e:
                        log.warning("container %s: %s", rec.name or rec.key, e)
            if self.dns is not None:
                for name, ip in self.names(rec, cidrs):
                    actions += self.dns.add(name, ip, rec.key, now)
        elif event == "detached":
            for c in cidrs:
                actions += self.ipam.release(rec.key, c, now)
                if self.dns is not None:
                    actions += self.dns.remove(rec.key, now, address=str(ipaddress.ip_interface(c).ip))
        elif event in ("stopped", "removed"):
            if self.dns is not None:   # a container that dies loses its names everywhere
                actions += self.dns.remove(rec.key, now)
            if event == "removed":
                actions += self.ipam.release(rec.key, None, now)
        self.execute(actions)

    def names(self, rec: Row, cidrs: list[str]) -> list[tuple[str, str]]:
        """(name, ip) pairs: the container's own hostname when it lies in the domain, plus dns-add's."""
        out = []
        host = self._own_name(rec)
        if host is not None:
            out += [(host, ip) for ip in _ips(cidrs)]
        ips = set(_ips(cidrs))
        out += [(n, ip) for n, ip in rec.dns if ip in ips]
        return out

    def _own_name(self, rec: Row) -> str | None:
        """The container's own hostname, fully qualified, if it lies in the weaveDNS domain."""
        host = rec.fqdn.lower().rstrip(".") + "."
        return host if self.dns is not None and host.endswith("." + self.dns.domain) else None

    def forget_stale_leases(self) -> None:
        """IPAM allocations of containers that have no record any more (e.g. a crash between the
        allocation and the attach) are released."""
        now = self.clock()
        snap = self.attachments.snapshot
        attached = snap.keys() | ({EXPOSE_KEY} if snap.exposed else set())   # the host's own leases (expose)
        for cid in list(self.ipam.alloc.allocations()):
            if cid not in attached:
                self.execute(self.ipam.release(cid, None, now))

    # --- weave dns-add / dns-remove / dns-lookup --------------------------------------------------------
    def _dns(self) -> DnsService:
        if self.dns is None:
            raise ValueError("weaveDNS is off (router launched with --no-dns)")
        return self.dns

    async def dns_add(self, target: str, ips: list[str], fqdn: str | None) -> dict:
        dns = self._dns()
        rec = await self.attachments.record(target)
        name = self._name_for(rec, fqdn)
        have = set(_ips(rec.cidrs))
        wanted = [str(ipaddress.IPv4Address(ip)) for ip in ips] if ips else sorted(have)
        for ip in wanted:
            if ip not in have:
                raise ValueError(f"{ip} is not a weave address of {rec.name or rec.key} (it has "
                                 f"{', '.join(sorted(have)) or 'none'})")
        entries = [list(e) for e in rec.dns]
        for ip in wanted:
            if [name, ip] not in entries:
                entries.append([name, ip])
            self.execute(dns.add(name, ip, rec.key, self.clock()))
        await self.attachments.set_dns(rec.key, entries)
        return {"name": name, "addresses": wanted}

    async def dns_remove(self, target: str, ips: list[str], fqdn: str | None) -> dict:
        dns = self._dns()
        rec = await self.attachments.record(target)
        name = qualify(fqdn, dns.domain) if fqdn else None
        addrs = [str(ipaddress.IPv4Address(ip)) for ip in ips] or [None]
        before = len(dns.store.container_names(rec.key))
        for ip in addrs:
            self.execute(dns.remove(rec.key, self.clock(), address=ip, name=name))
        removed = before - len(dns.store.container_names(rec.key))
        entries = [e for e in rec.dns if not ((name is None or e[0] == name) and (addrs == [None] or e[1] in addrs))]
        await self.attachments.set_dns(rec.key, entries)
        return {"removed": removed}

    def _name_for(self, rec: Row, fqdn: str | None) -> str:
        dns = self._dns()
        if fqdn:
            name = qualify(fqdn, dns.domain)
        elif (own := self._own_name(rec)) is not None:
            name = own
        elif rec.name:
            name = qualify(rec.name, dns.domain)
        else:
            raise ValueError("no name to register: give one with -h NAME")
        if not name.endswith("." + dns.domain):
            raise ValueError(f"{name} is not in the weaveDNS domain {dns.domain}")
        return name

    def dns_lookup(self, name: str) -> list[str]:
        dns = self._dns()
        return dns.store.lookup(qualify(name, dns.domain))
