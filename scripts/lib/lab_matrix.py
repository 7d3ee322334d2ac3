#!/usr/bin/env python3
"""Print every lab host's `weave status` and a ping matrix between the declared containers (and exposed
host addresses) across hosts. Exit status 1 when a ping that should work fails, or one that must not
work (another subnet) succeeds.

Reads the declarations from the inventory (`ansible-inventory --list` JSON on stdin or from a file):
weave_subnets per mesh group, weave_containers / weave_expose per host ("SUBNET:N" or CIDR).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

DOCKER = ["docker", "-H", os.environ.get("LAB_DOCKER_HOST", "unix:///run/weavenet-ansible-lab/docker.sock")]
WEAVE = "weave"  # on the PATH of every host (/usr/local/bin/weave, installed by the router role)


def resolve(entry: str, subnets: dict[str, str]) -> ipaddress.IPv4Interface:
    if "/" in entry:
        return ipaddress.ip_interface(entry)
    name, _, n = entry.rpartition(":")
    net = ipaddress.ip_network(subnets[name])
    return ipaddress.ip_interface(f"{net.network_address + int(n)}/{net.prefixlen}")


def endpoints(inv: dict) -> list[dict]:
    hostvars = inv.get("_meta", {}).get("hostvars", {})
    eps = []
    for host, hv in hostvars.items():
        subnets = hv.get("weave_subnets") or {}
        for c in hv.get("weave_containers") or []:
            if c.get("state", "started") == "absent":
                continue
            for entry in c.get("cidrs") or []:
                eps.append({"host": host, "kind": "container", "name": c["name"],
                            "iface": resolve(str(entry), subnets), "mesh": hv.get("weave_mesh_group")})
        for entry in hv.get("weave_expose") or []:
            eps.append({"host": host, "kind": "host", "name": f"{host}(expose)",
                        "iface": resolve(str(entry), subnets), "mesh": hv.get("weave_mesh_group")})
    return sorted(eps, key=lambda e: (e["host"], e["kind"] != "container", e["name"]))


def host_exec(host: str, argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(DOCKER + ["exec", host] + argv, capture_output=True, text=True, timeout=timeout, check=False)


def ping(src: dict, dst_ip: str, tries: int) -> bool:
    if src["kind"] == "container":
        argv = ["docker", "exec", src["name"], "ping", "-c", "1", "-W", "2", dst_ip]
    else:
        argv = ["ping", "-c", "1", "-W", "2", "-I", str(src["iface"].ip), dst_ip]
    for _ in range(tries):  # the first packet may wait for ARP over the mesh
        try:
            if host_exec(src["host"], argv).returncode == 0:
                return True
        except subprocess.TimeoutExpired:
            pass
    return False


def main() -> int:
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as f:
            inv = json.load(f)
    else:
        inv = json.load(sys.stdin)
    hosts = sorted(inv.get("_meta", {}).get("hostvars", {}))
    for h in hosts:
        print(f"=== {h}: weave status")
        r = host_exec(h, [WEAVE, "status"])
        print((r.stdout or r.stderr).rstrip())
    eps = endpoints(inv)
    if not eps:
        print("no containers declared")
        return 0
    labels = [f"{e['name']}@{e['host']} {e['iface'].ip}" for e in eps]
    width = max(len(x) for x in labels)
    print("\n=== ping matrix (row pings column; ok = reply, -- = no reply, . = itself; "
          "other subnets must not answer)")
    print(" " * (width + 3) + " ".join(f"{i:>4}" for i in range(len(eps))))
    bad = []
    for i, src in enumerate(eps):
        cells = []
        for j, dst in enumerate(eps):
            if i == j:
                cells.append("   .")
                continue
            same = src["iface"].network == dst["iface"].network and src["mesh"] == dst["mesh"]
            if src["kind"] == "host" and dst["kind"] == "host":
                cells.append("    ")
                continue
            if src["kind"] == "container" and src["host"] == dst["host"] and src["name"] == dst["name"]:
                cells.append("   .")
                continue
            ok = ping(src, str(dst["iface"].ip), tries=2 if same else 1)
            cells.append("  ok" if ok else "  --")
            if ok != same:
                bad.append(f"{labels[i]} -> {labels[j]}: {'reachable' if ok else 'unreachable'}, "
                           f"expected {'reachable' if same else 'unreachable'}")
        print(f"{i:>2} {labels[i]:<{width}}" + " ".join(cells))
    if bad:
        print("\nUNEXPECTED:\n  " + "\n  ".join(bad))
        return 1
    print("\nall as expected: each subnet reaches itself across hosts, and nothing else")
    return 0


if __name__ == "__main__":
    sys.exit(main())
