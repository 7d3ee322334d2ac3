"""What is plugged into the weave bridge on this host, kept in step with Docker and the kernel.

One record per attached workload: a Docker container (by id) or a bare namespace (``netns:NAME``,
``pid:PID``). Records drive the isolation ruleset, ``weave ps``, and lifecycle: a container that
dies keeps its record (marked stopped) so a restart gets its addresses back; one that is removed
loses it. Records are persisted in WEAVE_DATADIR so a restarted router re-learns them, and
reconciled with Docker and the kernel on start.

Everything here blocks (netlink, Docker, nft): it runs in worker threads, one operation at a time.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import net
from ..containers.client import ContainerInfo, Docker, DockerUnavailable
from ..net import isolation
from ..net.addrs import parse_cidr, parse_cidrs
from ..net.netns import check_netns_path
from .state import load_attachment_records, write_atomic

log = logging.getLogger("weavenet.attachments")

BARE_PREFIXES = ("netns:", "pid:")


@dataclass
class Record:
    key: str                     # container id, or the netns:/pid: target
    name: str                    # container name ('' for bare namespaces)
    cidrs: list[str]
    mac: str = ""
    ifname: str = ""
    running: bool = True
    kind: str = "container"      # container | netns
    netns: str = ""              # netns file of a bare namespace
    fqdn: str = ""               # the container's own hostname (registered in DNS when in the domain)
    dns: list = field(default_factory=list)   # [name, ip] added by weave dns-add
    extra: dict = field(default_factory=dict)

    def port(self) -> isolation.Port | None:
        if not (self.running and self.ifname and self.mac and self.cidrs):
            return None
        return isolation.Port(self.ifname, self.mac, tuple(self.cidrs))


def _same_ip(a: str, b: str) -> bool:
    return ipaddress.ip_interface(a).ip == ipaddress.ip_interface(b).ip


Listener = Callable[[str, Record, list[str]], None]


class Attachments:
    """``listener(event, record, cidrs)`` hears of every change, from whichever thread made it (it must
    not block): "attached" (cidrs: all now on ethwe), "detached" (cidrs removed), "stopped", "removed"
    (cidrs: all it had). The router uses it for DNS names and IPAM leases."""

    def __init__(self, state_file: Path, bridge: str, mtu: int, uplinks: list[str],
                 docker: Docker | None = None, service: str | None = None,
                 listener: Listener | None = None) -> None:
        self.state_file = state_file
        self.bridge = bridge
        self.mtu = mtu
        self.uplinks = uplinks
        self.service = service
        self.listener = listener or (lambda event, rec, cidrs: None)
        self._routes = (f"{service}/32",) if service else ()
        self.docker = docker or Docker()
        self.records: dict[str, Record] = {}
        self.exposed: list[str] = []
        self._lock = threading.RLock()
        self._load()

    # --- persistence ---------------------------------------------------------------------------
    def _load(self) -> None:
        # A corrupt file raises StateError (one line, launch fails): ignoring it would forget every
        # workload and the next save would overwrite what an operator could still recover.
        for r in load_attachment_records(self.state_file):
            rec = Record(**r)
            self.records[rec.key] = rec

    def _save(self) -> None:
        try:
            write_atomic(self.state_file, json.dumps({"records": [asdict(r) for r in self.records.values()]},
                                                     indent=1) + "\n")
        except OSError as e:
            log.warning("cannot persist attachments: %s", e)

    # --- targets ---------------------------------------------------------------------------------
    def _resolve(self, target: str) -> tuple[str, str, str, ContainerInfo | None]:
        """(record key, netns path, name, container) for a target; raises ValueError/DockerUnavailable."""
        if target.startswith(BARE_PREFIXES):
            return target, net.resolve_target(target), "", None
        if not target or target.startswith("-") or "/" in target:
            raise ValueError(f"bad target {target!r}: expected a container name or id, netns:NAME or pid:PID")
        info = self.docker.find_running(target)
        return info.id, info.netns, info.name, info

    # --- operations --------------------------------------------------------------------------------
    def attach(self, target: str, cidrs: list[str]) -> dict:
        if not cidrs:
            raise ValueError("attach needs at least one CIDR, e.g. 10.0.0.1/24")
        parse_cidrs(cidrs)   # bad syntax fails before anything else is looked at
        with self._lock:
            key, path, name, info = self._resolve(target)
            self._check_free(key, cidrs)
            try:
                result = net.attach(path, cidrs, self.bridge, self.mtu, routes=self._routes)
            except (ValueError, RuntimeError, OSError):
                if name and not self.docker.find(key).running:  # its namespace went with it
                    raise ValueError(f"container {name} exited before it could be attached") from None
                raise
            rec = self.records.get(key)
            if rec is None:
                rec = self.records[key] = Record(key=key, name=name, cidrs=[],
                                                 kind="container" if name else "netns",
                                                 netns=path if not name else "")
            rec.cidrs, rec.mac, rec.ifname, rec.running = result["addresses"], result["mac"], result["ifname"], True
            rec.fqdn = info.fqdn if info is not None else rec.fqdn
            self._commit()
            self.listener("attached", rec, list(rec.cidrs))
            return {**result, "container": key, "name": name}

    def detach(self, target: str, cidrs: list[str] | None) -> dict:
        if cidrs:
            parse_cidrs(cidrs)
        with self._lock:
            try:
                key, path, name, _ = self._resolve(target)
            except ValueError:
                stopped = self._stopped_record(target)
                if stopped is None:
                    raise
                return self._detach_stopped(stopped, cidrs)
            result = net.detach(path, cidrs or None, self.bridge)
            rec = self.records.get(key)
            if rec is not None:
                gone = [c for c in rec.cidrs if not any(_same_ip(c, a) for a in result["addresses"])]
                if result["addresses"]:
                    rec.cidrs = result["addresses"]
                else:
                    del self.records[key]
                self._commit()
                self.listener("detached" if result["addresses"] else "removed", rec, gone)
            return {**result, "container": key, "name": name}

    def _stopped_record(self, target: str) -> Record | None:
        if target.startswith(BARE_PREFIXES):
            return None
        info = self.docker.exists(target)
        rec = self.records.get(info.id) if info is not None and not info.running else None
        return rec

    def _detach_stopped(self, rec: Record, cidrs: list[str] | None) -> dict:
        """A stopped container has no ethwe to change: forget the addresses so a restart won't bring them back."""
        left = [c for c in rec.cidrs if cidrs and not any(_same_ip(c, d) for d in cidrs)]
        gone = [c for c in rec.cidrs if c not in left]
        if left:
            rec.cidrs = left
        else:
            del self.records[rec.key]
        self._commit()
        self.listener("detached" if left else "removed", rec, gone)
        return {"addresses": left, "container": rec.key, "name": rec.name}

    def expose(self, cidrs: list[str], hide: bool) -> dict:
        if not cidrs:
            raise ValueError("expected at least one CIDR, e.g. 10.0.0.254/24")
        for c in cidrs:
            parse_cidr(c)
        with self._lock:
            if not hide:
                self._check_free("weave:expose", cidrs)
            for c in cidrs:
                (net.hide if hide else net.expose)(c, self.bridge)
            self._commit()
            return {"addresses": self.exposed}

    def _check_free(self, key: str, cidrs: list[str]) -> None:
        """An address may be on one workload of this host only (the host's own exposed ones included)."""
        owners = [(r.key, r.name or r.key, r.cidrs) for r in self.records.values() if r.running]
        owners.append(("weave:expose", "weave:expose", net.exposed(self.bridge)))
        for c in cidrs:
            for okey, oname, ocidrs in owners:
                if okey != key and any(_same_ip(c, o) for o in ocidrs):
                    raise ValueError(f"{ipaddress.ip_interface(c).ip} is already used by {oname[:40]} on this host")

    def _commit(self) -> None:
        """Persist records and reload the isolation rules after any change."""
        self._save()
        self.exposed = net.exposed(self.bridge)
        ports = [p for r in self.records.values() if (p := r.port()) is not None]
        isolation.apply(isolation.render(self.uplinks, ports, self.exposed, self.service))

    # --- lifecycle ---------------------------------------------------------------------------------
    def on_event(self, action: str, container_id: str) -> None:
        """Docker said: start | die | destroy."""
        with self._lock:
            rec = self.records.get(container_id)
            if rec is None:
                return
            if action == "destroy":
                log.info("container %s removed: forgetting %s", rec.name, ", ".join(rec.cidrs))
                del self.records[container_id]
                event = "removed"
            elif action == "die":
                log.info("container %s stopped", rec.name)
                rec.running, rec.ifname = False, ""   # its veth went with its namespace
                event = "stopped"
            elif action == "start":
                self._reattach(rec)
                event = "attached" if rec.running else "stopped"
            else:
                return
            self._commit()
            self.listener(event, rec, list(rec.cidrs))

    def _reattach(self, rec: Record) -> None:
        try:
            info = self.docker.find_running(rec.key)
            result = net.attach(info.netns, rec.cidrs, self.bridge, self.mtu, routes=self._routes)
        except (ValueError, RuntimeError, OSError) as e:
            log.warning("cannot re-attach container %s: %s", rec.name, e)
            rec.running = False
            return
        rec.name, rec.mac, rec.ifname, rec.running = info.name, result["mac"], result["ifname"], True
        rec.fqdn = info.fqdn
        rec.cidrs = result["addresses"]
        log.info("container %s (re)started: attached %s", rec.name, ", ".join(rec.cidrs))

    def reconcile(self) -> None:
        """After a router (re)start: bring records in line with Docker and the kernel.

        Running containers get missing addresses back (attach is idempotent: addresses and the veth
        already in place are left alone, so their traffic is not touched); stopped ones are marked;
        removed ones and vanished namespaces are forgotten.
        """
        with self._lock:
            events: list[tuple[str, Record]] = []
            for key, rec in list(self.records.items()):
                if rec.kind == "netns":
                    try:
                        result = net.attach(check_netns_path(rec.netns), rec.cidrs, self.bridge, self.mtu,
                                            routes=self._routes)
                        rec.mac, rec.ifname, rec.running = result["mac"], result["ifname"], True
                        events.append(("attached", rec))
                    except (ValueError, RuntimeError, OSError) as e:
                        log.info("forgetting %s: %s", key, e)
                        del self.records[key]
                        events.append(("removed", rec))
                    continue
                try:
                    info = self.docker.exists(key)
                except DockerUnavailable as e:
                    log.warning("%s; keeping container records as they are", e)
                    break
                if info is None:
                    del self.records[key]
                    events.append(("removed", rec))
                elif info.running:
                    self._reattach(rec)
                    events.append(("attached" if rec.running else "stopped", rec))
                else:
                    rec.running, rec.ifname = False, ""
                    events.append(("stopped", rec))
            self._commit()
            for event, rec in events:
                self.listener(event, rec, list(rec.cidrs))

    def key_of(self, target: str) -> str:
        """The record key of a target, which must be running (a container) or exist (a namespace)."""
        return self._resolve(target)[0]

    def record(self, target: str) -> Record:
        """The record of a target (for dns-add/dns-remove); ValueError if it is not attached."""
        with self._lock:
            key = target if target in self.records else self._resolve(target)[0]
            rec = self.records.get(key)
            if rec is None:
                raise ValueError(f"{target} is not attached to the overlay")
            return rec

    def set_dns(self, key: str, names: list) -> None:
        with self._lock:
            if key in self.records:
                self.records[key].dns = names
                self._save()

    # --- reporting ---------------------------------------------------------------------------------
    def ps(self) -> list[dict]:
        with self._lock:
            out = [{"id": r.key, "name": r.name, "mac": r.mac, "cidrs": list(r.cidrs), "running": r.running,
                    "hostname": r.fqdn}
                   for r in sorted(self.records.values(), key=lambda r: (r.name, r.key))]
        return out
