"""What is plugged into the weave bridge on this host, kept in step with Docker and the kernel.

One record per attached workload: a Docker container (by id) or a bare namespace (``netns:NAME``,
``pid:PID``). Records drive the isolation ruleset, ``weave ps``, and lifecycle: a container that
dies keeps its record (marked stopped) so a restart gets its addresses back; one that is removed
loses it. Records are persisted in WEAVE_DATADIR so a restarted router re-learns them, and
reconciled with Docker and the kernel on start.

Concurrency: an actor. One worker thread (``weave-attach``) owns the records and runs every operation
(Docker lookups, netlink, ``nft -f``) one at a time, in order; callers on the loop ``await`` it, the Docker
event thread queues onto it. After each change it publishes an immutable ``Snapshot`` that readers (``weave
ps``, the report, /metrics) take without a lock, so they never wait for Docker or the kernel. Changes are
told to the loop (``start``'s listener). The whole map: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import net
from ..containers.client import ContainerInfo, Docker, DockerUnavailable
from ..net import isolation
from ..net.addrs import parse_cidr, parse_cidrs
from ..net.netns import check_netns_path
from .state import load_attachment_records, write_atomic

log = logging.getLogger("weavenet.attachments")

BARE_PREFIXES = ("netns:", "pid:")
EXPOSE_KEY = "weave:expose"


@dataclass
class Record:
    """Mutable: the actor's thread only. Everyone else sees `Row`s."""
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

    def row(self) -> Row:
        return Row(self.key, self.name, tuple(self.cidrs), self.mac, self.running, self.kind, self.fqdn,
                   tuple((str(n), str(ip)) for n, ip in self.dns))


@dataclass(frozen=True)
class Row:
    """One workload as published: safe to read from any thread."""
    key: str
    name: str
    cidrs: tuple[str, ...]
    mac: str
    running: bool
    kind: str
    fqdn: str
    dns: tuple[tuple[str, str], ...]

    def ps(self) -> dict:
        return {"id": self.key, "name": self.name, "mac": self.mac, "cidrs": list(self.cidrs),
                "running": self.running, "hostname": self.fqdn}


@dataclass(frozen=True)
class Snapshot:
    rows: tuple[Row, ...] = ()      # sorted by (name, key), as `weave ps` lists them
    exposed: tuple[str, ...] = ()   # the host's own addresses on the bridge (weave expose)

    def keys(self) -> frozenset[str]:
        return frozenset(r.key for r in self.rows)

    def ps(self) -> list[dict]:
        return [r.ps() for r in self.rows]


class Host(Protocol):
    """The kernel side of attachments: blocking calls, made on the actor's thread only."""
    def resolve(self, target: str) -> str: ...
    def netns_path(self, path: str) -> str: ...
    def attach(self, path: str, cidrs: list[str]) -> dict: ...
    def detach(self, path: str, cidrs: list[str] | None) -> dict: ...
    def expose(self, cidr: str) -> None: ...
    def hide(self, cidr: str) -> None: ...
    def exposed(self) -> list[str]: ...
    def apply_rules(self, ports: list[isolation.Port], exposed: list[str]) -> None: ...


class KernelHost:
    """`Host` on the real kernel: veths and addresses via netlink, the isolation ruleset via nft."""

    def __init__(self, bridge: str, mtu: int, uplinks: list[str], service: str | None) -> None:
        self.bridge, self.mtu, self.uplinks, self.service = bridge, mtu, uplinks, service
        self._routes = (f"{service}/32",) if service else ()

    def resolve(self, target: str) -> str:
        return net.resolve_target(target)

    def netns_path(self, path: str) -> str:
        return check_netns_path(path)

    def attach(self, path: str, cidrs: list[str]) -> dict:
        return net.attach(path, cidrs, self.bridge, self.mtu, routes=self._routes)

    def detach(self, path: str, cidrs: list[str] | None) -> dict:
        return net.detach(path, cidrs, self.bridge)

    def expose(self, cidr: str) -> None:
        net.expose(cidr, self.bridge)

    def hide(self, cidr: str) -> None:
        net.hide(cidr, self.bridge)

    def exposed(self) -> list[str]:
        return net.exposed(self.bridge)

    def apply_rules(self, ports: list[isolation.Port], exposed: list[str]) -> None:
        isolation.apply(isolation.render(self.uplinks, ports, exposed, self.service))


def _same_ip(a: str, b: str) -> bool:
    return ipaddress.ip_interface(a).ip == ipaddress.ip_interface(b).ip


Listener = Callable[[str, Row, list[str]], None]


class Attachments:
    """The actor. ``start(listener)`` (on the loop) starts it; the listener then hears, on the loop, of every
    change: "attached" (cidrs: all now on ethwe), "detached" (cidrs removed), "stopped", "removed" (cidrs:
    all it had). The router uses it for DNS names and IPAM leases."""

    def __init__(self, state_file: Path, bridge: str, mtu: int, uplinks: list[str],
                 docker: Docker | None = None, service: str | None = None, host: Host | None = None) -> None:
        self.state_file = state_file
        self.host: Host = host or KernelHost(bridge, mtu, uplinks, service)
        self.docker = docker or Docker()
        self.records: dict[str, Record] = {}   # the worker thread's (loaded here, before it exists)
        self._exposed: list[str] = []
        self._load()
        self.snapshot = Snapshot()             # replaced whole after each change: read it without a lock
        self._publish()
        self._notify: Listener = lambda event, row, cidrs: None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="weave-attach")

    # --- the actor's edges: loop callers await, other threads queue ------------------------------------
    def start(self, listener: Listener) -> None:
        """On the loop: from now on the listener hears of changes, on the loop."""
        loop = asyncio.get_running_loop()

        def notify(event: str, row: Row, cidrs: list[str]) -> None:
            with contextlib.suppress(RuntimeError):   # the loop is closing: nobody left to tell
                loop.call_soon_threadsafe(listener, event, row, cidrs)
        self._notify = notify

    def close(self) -> None:
        """Blocking: waits for the operation in progress; queued ones are dropped (reconcile catches up)."""
        self._worker.shutdown(wait=True, cancel_futures=True)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _queue(self, fn: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - nobody awaits a queued job: its failure is logged here
                log.exception("attachments: %s failed", fn.__name__)
        with contextlib.suppress(RuntimeError):   # shut down: the next start reconciles
            self._worker.submit(run)

    async def attach(self, target: str, cidrs: list[str]) -> dict:
        return await self._call(self._attach, target, cidrs)

    async def detach(self, target: str, cidrs: list[str] | None) -> dict:
        return await self._call(self._detach, target, cidrs)

    async def expose(self, cidrs: list[str], hide: bool) -> dict:
        return await self._call(self._expose, cidrs, hide)

    async def reconcile(self) -> None:
        await self._call(self._reconcile)

    async def key_of(self, target: str) -> str:
        """The record key of a target, which must be running (a container) or exist (a namespace)."""
        return (await self._call(self._resolve, target))[0]

    async def record(self, target: str) -> Row:
        """The record of a target (for dns-add/dns-remove); ValueError if it is not attached."""
        return await self._call(self._record, target)

    async def record_or_none(self, target: str) -> Row | None:
        """The record of a target, None if it exists but is not attached; ValueError if it does not exist."""
        return await self._call(self._record_or_none, target)

    async def set_dns(self, key: str, names: list) -> None:
        await self._call(self._set_dns, key, names)

    def on_event(self, action: str, container_id: str) -> None:
        """Any thread (the Docker event watcher): Docker said start | die | destroy."""
        self._queue(self._on_event, action, container_id)

    def request_reconcile(self) -> None:
        """Any thread: the watcher (re)connected to Docker; events sent while it was away are lost."""
        self._queue(self._reconcile)

    # --- persistence and publishing (worker thread) --------------------------------------------------
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

    def _publish(self) -> None:
        rows = tuple(r.row() for r in sorted(self.records.values(), key=lambda r: (r.name, r.key)))
        self.snapshot = Snapshot(rows, tuple(self._exposed))

    def _commit(self) -> None:
        """Persist records, reload the isolation rules and publish, after any change."""
        self._save()
        self._exposed = self.host.exposed()
        self._publish()
        ports = [p for r in self.records.values() if (p := r.port()) is not None]
        self.host.apply_rules(ports, self._exposed)

    def _tell(self, event: str, rec: Record, cidrs: list[str]) -> None:
        self._notify(event, rec.row(), list(cidrs))

    # --- operations (worker thread) -----------------------------------------------------------------------
    def _resolve(self, target: str) -> tuple[str, str, str, ContainerInfo | None]:
        """(record key, netns path, name, container) for a target; raises ValueError/DockerUnavailable."""
        if target.startswith(BARE_PREFIXES):
            return target, self.host.resolve(target), "", None
        if not target or target.startswith("-") or "/" in target:
            raise ValueError(f"bad target {target!r}: expected a container name or id, netns:NAME or pid:PID")
        info = self.docker.find_running(target)
        return info.id, info.netns, info.name, info

    def _attach(self, target: str, cidrs: list[str]) -> dict:
        if not cidrs:
            raise ValueError("attach needs at least one CIDR, e.g. 10.0.0.1/24")
        parse_cidrs(cidrs)   # bad syntax fails before anything else is looked at
        key, path, name, info = self._resolve(target)
        self._check_free(key, cidrs)
        try:
            result = self.host.attach(path, cidrs)
        except (ValueError, RuntimeError, OSError):
            if name and not self.docker.find(key).running:  # its namespace went with it
                raise ValueError(f"container {name} exited before it could be attached") from None
            raise
        old = self.records.get(key)
        before = Record(**asdict(old)) if old is not None else None
        rec = self.records[key] = Record(**asdict(old)) if old is not None else Record(
            key=key, name=name, cidrs=[], kind="container" if name else "netns", netns=path if not name else "")
        rec.cidrs, rec.mac, rec.ifname, rec.running = result["addresses"], result["mac"], result["ifname"], True
        rec.fqdn = info.fqdn if info is not None else rec.fqdn
        try:
            self._commit()
        except BaseException:
            self._undo_attach(key, path, before, cidrs)
            raise
        self._tell("attached", rec, rec.cidrs)
        return {**result, "container": key, "name": name}

    def _undo_attach(self, key: str, path: str, before: Record | None, cidrs: list[str]) -> None:
        """The rules could not be loaded for a new attachment: take its new addresses off again, so the
        records, the kernel and the caller (who gives back its IPAM leases) agree it did not happen."""
        had = before.cidrs if before is not None else []
        new = [c for c in cidrs if not any(_same_ip(c, h) for h in had)]
        if before is None:
            self.records.pop(key, None)
        else:
            self.records[key] = before
        try:
            if new:
                self.host.detach(path, new if had else None)
            self._commit()
        except Exception as e:  # noqa: BLE001 - the original failure is what the caller must hear
            log.warning("cannot undo the attach of %s: %s", key[:40], e)

    def _detach(self, target: str, cidrs: list[str] | None) -> dict:
        if cidrs:
            parse_cidrs(cidrs)
        try:
            key, path, name, _ = self._resolve(target)
        except ValueError:
            stopped = self._stopped_record(target)
            if stopped is None:
                raise
            return self._detach_stopped(stopped, cidrs)
        result = self.host.detach(path, cidrs or None)
        rec = self.records.get(key)
        gone = [c for c in (cidrs or []) if not any(_same_ip(c, a) for a in result["addresses"])]
        if rec is not None:
            gone = [c for c in rec.cidrs if not any(_same_ip(c, a) for a in result["addresses"])]
            if result["addresses"]:
                rec.cidrs = result["addresses"]
            else:
                del self.records[key]
            self._commit()
            self._tell("detached" if result["addresses"] else "removed", rec, gone)
        return {**result, "removed": gone, "container": key, "name": name}

    def _stopped_record(self, target: str) -> Record | None:
        if target.startswith(BARE_PREFIXES):
            return None
        info = self.docker.exists(target)
        return self.records.get(info.id) if info is not None and not info.running else None

    def _detach_stopped(self, rec: Record, cidrs: list[str] | None) -> dict:
        """A stopped container has no ethwe to change: forget the addresses so a restart won't bring them back."""
        left = [c for c in rec.cidrs if cidrs and not any(_same_ip(c, d) for d in cidrs)]
        gone = [c for c in rec.cidrs if c not in left]
        if left:
            rec.cidrs = left
        else:
            del self.records[rec.key]
        self._commit()
        self._tell("detached" if left else "removed", rec, gone)
        return {"addresses": left, "removed": gone, "container": rec.key, "name": rec.name}

    def _expose(self, cidrs: list[str], hide: bool) -> dict:
        if not cidrs:
            raise ValueError("expected at least one CIDR, e.g. 10.0.0.254/24")
        for c in cidrs:
            parse_cidr(c)
        if not hide:
            self._check_free(EXPOSE_KEY, cidrs)
        before = self.host.exposed()
        for c in cidrs:
            (self.host.hide if hide else self.host.expose)(c)
        self._commit()
        if hide:
            gone = [c for c in before if not any(_same_ip(c, a) for a in self._exposed)]
            return {"addresses": list(self._exposed), "removed": gone}
        return {"addresses": list(self._exposed), "added": list(cidrs)}

    def _check_free(self, key: str, cidrs: list[str]) -> None:
        """An address may be on one workload of this host only (the host's own exposed ones included)."""
        owners = [(r.key, r.name or r.key, r.cidrs) for r in self.records.values() if r.running]
        owners.append((EXPOSE_KEY, EXPOSE_KEY, self.host.exposed()))
        for c in cidrs:
            for okey, oname, ocidrs in owners:
                if okey != key and any(_same_ip(c, o) for o in ocidrs):
                    raise ValueError(f"{ipaddress.ip_interface(c).ip} is already used by {oname[:40]} on this host")

    # --- lifecycle (worker thread) -------------------------------------------------------------------------
    def _on_event(self, action: str, container_id: str) -> None:
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
        self._tell(event, rec, rec.cidrs)

    def _reattach(self, rec: Record) -> None:
        try:
            info = self.docker.find_running(rec.key)
            result = self.host.attach(info.netns, rec.cidrs)
        except (ValueError, RuntimeError, OSError) as e:
            log.warning("cannot re-attach container %s: %s", rec.name, e)
            rec.running = False
            return
        rec.name, rec.mac, rec.ifname, rec.running = info.name, result["mac"], result["ifname"], True
        rec.fqdn = info.fqdn
        rec.cidrs = result["addresses"]
        log.info("container %s (re)started: attached %s", rec.name, ", ".join(rec.cidrs))

    def _reconcile(self) -> None:
        """After a router (re)start: bring records in line with Docker and the kernel.

        Running containers get missing addresses back (attach is idempotent: addresses and the veth
        already in place are left alone, so their traffic is not touched); stopped ones are marked;
        removed ones and vanished namespaces are forgotten.
        """
        events: list[tuple[str, Record]] = []
        for key, rec in list(self.records.items()):
            if rec.kind == "netns":
                try:
                    result = self.host.attach(self.host.netns_path(rec.netns), rec.cidrs)
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
            self._tell(event, rec, rec.cidrs)

    def _record(self, target: str) -> Row:
        key = target if target in self.records else self._resolve(target)[0]
        rec = self.records.get(key)
        if rec is None:
            raise ValueError(f"{target} is not attached to the overlay")
        return rec.row()

    def _record_or_none(self, target: str) -> Row | None:
        if target in self.records:
            return self.records[target].row()
        try:
            key = self._resolve(target)[0]
        except ValueError:
            stopped = self._stopped_record(target)   # a stopped container keeps its record
            if stopped is None:
                raise
            key = stopped.key
        rec = self.records.get(key)
        return rec.row() if rec is not None else None

    def _set_dns(self, key: str, names: list) -> None:
        if key in self.records:
            self.records[key].dns = names
            self._save()
            self._publish()
