"""Stand-ins for the parts of a router that need root or Docker, for loop-level wiring tests.

FakeHost is the kernel side of the real Attachments actor (veths, addresses, nft rules) kept in memory;
FakeDocker knows a few containers; FakeDataplane moves no frames. Everything else in those routers is real.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from types import SimpleNamespace

from weavenet.containers.client import ContainerInfo, DockerUnavailable
from weavenet.datapath.macs import MacTable


class FakeHost:
    def __init__(self) -> None:
        self.links: dict[str, list[str]] = {}   # netns path -> addresses on its ethwe
        self.host_addrs: list[str] = []
        self.rules_loaded = 0
        self.fail_rules = False
        self.blocked = threading.Event()        # set: attach waits for `release`
        self.entered = threading.Event()        # an attach is waiting
        self.release = threading.Event()

    def resolve(self, target: str) -> str:
        if target.startswith("netns:"):
            return f"/run/netns/{target[6:]}"
        raise ValueError(f"no such target {target}")

    def netns_path(self, path: str) -> str:
        return path

    def attach(self, path: str, cidrs: list[str]) -> dict:
        if self.blocked.is_set():
            self.entered.set()
            assert self.release.wait(10), "the test never released the attach"
        have = self.links.setdefault(path, [])
        have += [c for c in cidrs if c not in have]
        return {"addresses": list(have), "mac": "02:00:00:00:00:%02x" % (len(self.links) % 256),
                "ifname": f"vethwepl{len(self.links)}"}

    def detach(self, path: str, cidrs: list[str] | None) -> dict:
        left = [c for c in self.links.get(path, []) if cidrs is not None and c not in cidrs]
        if left:
            self.links[path] = left
        else:
            self.links.pop(path, None)
        return {"addresses": left}

    def expose(self, cidr: str) -> None:
        self.host_addrs.append(cidr)

    def hide(self, cidr: str) -> None:
        self.host_addrs.remove(cidr)

    def exposed(self) -> list[str]:
        return list(self.host_addrs)

    def apply_rules(self, ports, exposed) -> None:
        if self.fail_rules:
            raise RuntimeError("nft: Could not process rule: No such file or directory")
        self.rules_loaded += 1


class FakeDocker:
    def __init__(self, *containers: ContainerInfo) -> None:
        self.containers = {c.name: c for c in containers}

    def find(self, ref: str) -> ContainerInfo:
        for c in self.containers.values():
            if ref in (c.name, c.id):
                return c
        raise ValueError(f"no such container {ref}")

    def find_running(self, ref: str) -> ContainerInfo:
        return self.find(ref)

    def exists(self, ref: str) -> ContainerInfo | None:
        try:
            return self.find(ref)
        except ValueError:
            return None

    def events(self):
        raise DockerUnavailable("the fake Docker sends no events")


class FakeDataplane:
    bridge_mac = "02:00:00:00:ff:01"
    fastdp = False

    def __init__(self, name: str, fail_sync: bool = False) -> None:
        self.fail_sync = fail_sync
        self.synced = 0
        self.macs = MacTable(local=name)
        self.engine = SimpleNamespace(frames=Counter(), bytes=Counter(), restarts=Counter(), lane=False,
                                      lane_fast=lambda: (0, 0))

    def setup(self) -> None:
        pass

    def uplinks(self) -> list[str]:
        return ["weave-tap"]

    def features(self) -> dict:
        return {}

    def start(self, loop) -> None:
        pass

    def stop(self, loop, keep_datapath: bool = False) -> None:
        self.stopped = "kept" if keep_datapath else "closed"   # how the router stopped its data plane

    def next_deadline(self) -> float:   # ticks like a data plane with fast-path peers
        return time.monotonic() + 0.1

    def wants_tick(self) -> bool:
        return False

    def sync(self, *args) -> list:   # (now), or (mesh, now) before the mesh emitted events
        self.synced += 1
        if self.fail_sync:
            raise ValueError("bad fastdp MAC")   # like the bug that once stopped every tick
        return []

    def on_datapath_message(self, peer: str, body: bytes) -> None:
        pass

    def on_connection_up(self, ev) -> None:
        pass

    def on_connection_down(self, ev) -> None:
        pass

    def on_routes(self, routes) -> None:
        pass

    def on_peers(self, known) -> None:
        pass

    def connection_info(self, peer: str) -> dict:
        return {"datapath": "sleeve", "mtu": 1376}

    def report(self, now: float) -> dict:
        return {"macs": [], "health": "healthy"}

    def fastdp_totals(self) -> dict:
        return {}

    def drop_counts(self) -> dict:
        return {}

    def health(self, now: float) -> tuple[str, str]:
        return "healthy", ""
