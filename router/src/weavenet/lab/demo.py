"""`scripts/lab up|down|status`: a 3-host demo mesh in network namespaces on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from . import docker as labdocker
from .netns import NetnsLab, namespaces_with_prefix, remove_namespaces

PREFIX = "wnlab"
WORKDIR = Path("/tmp/weavenet-lab")
HOSTS = 3
LABEL = "weavenet-lab=1"
DOCKERD_PID = WORKDIR / "dockerd.pid"   # present when the lab started dockerd (down stops it)


def up() -> int:
    if namespaces_with_prefix(PREFIX):
        print("lab is already up; 'scripts/lab down' first", file=sys.stderr)
        return 1
    lab = NetnsLab(HOSTS, prefix=PREFIX, workdir=WORKDIR)
    try:
        WORKDIR.mkdir(parents=True, exist_ok=True)
        pid = labdocker.start_engine(WORKDIR)
        if pid is not None:
            DOCKERD_PID.write_text(f"{pid}\n")
        image = labdocker.ensure_image()
        lab.create()
        prev = None
        for h in lab.hosts:
            name = h.weave("launch", "--nickname", f"host{h.index}", *([prev.ip] if prev else [])).stdout.strip()
            print(f"host{h.index} ({h.ip}): launched router {name}" + (f", peer {prev.ip}" if prev else ""))
            prev = h
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(len(json.loads(h.weave("report").stdout)["router"]["peers"]) == HOSTS for h in lab.hosts):
                break
            time.sleep(0.2)
        # One container per host on 10.0.0.0/24, as in the seed. --network none: the lab's hosts are
        # namespaces, so Docker's default network (on this machine, not in the lab host) means nothing.
        for h in lab.hosts:
            cid = h.weave("run", f"10.0.0.{h.index}/24", "-t", "-i", "--name", f"{PREFIX}-c{h.index}",
                          "--label", LABEL, "--network", "none", image).stdout.strip()
            print(f"host{h.index}: weave run 10.0.0.{h.index}/24 -t -i --name {PREFIX}-c{h.index} {image}"
                  f" -> {cid[:12]}")
    except BaseException:
        _remove_containers()
        lab.close()
        _stop_docker()
        raise
    status(lab)
    ping_matrix(lab)
    print("\nTry: ip netns exec wnlab-h1 env WEAVE_RUNDIR=/tmp/weavenet-lab/h1/run weave status peers")
    print("Tear down with: scripts/lab down")
    return 0


def status(lab: NetnsLab | None = None) -> int:
    lab = lab or _existing()
    for h in lab.hosts:
        print(f"\n===== host{h.index} ({h.netns}, {h.ip}) =====")
        print(h.weave("status").stdout.rstrip())
        print(h.weave("status", "connections").stdout.rstrip())
        print(h.weave("ps").stdout.rstrip())
    return 0


def ping_matrix(lab: NetnsLab) -> None:
    print("\nping matrix (container on row host -> container on column host, over the overlay):")
    print("        " + "".join(f"  host{j:<3}" for j in range(1, HOSTS + 1)))
    for i in range(1, HOSTS + 1):
        cells = []
        for j in range(1, HOSTS + 1):
            ok = subprocess.run(["docker", "exec", f"{PREFIX}-c{i}", "ping", "-c", "1", "-W", "2", f"10.0.0.{j}"],
                                capture_output=True, check=False).returncode == 0
            cells.append(f"  {'ok' if ok else 'FAIL':<7}")
        print(f"host{i:<4}" + "".join(cells))


def _existing() -> NetnsLab:
    lab = NetnsLab(HOSTS, prefix=PREFIX, workdir=WORKDIR)
    for i in range(1, HOSTS + 1):
        from .netns import Host
        lab.hosts.append(Host(lab, i, f"{PREFIX}-h{i}", lab.address(i), WORKDIR / f"h{i}" / "run",
                              WORKDIR / f"h{i}" / "data"))
    return lab


def _remove_containers() -> None:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}"], capture_output=True, text=True,
                         check=False).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


def _stop_docker() -> None:
    try:
        pid = int(DOCKERD_PID.read_text())
    except (FileNotFoundError, ValueError):
        return
    labdocker.stop_engine(pid)
    DOCKERD_PID.unlink()


def down() -> int:
    _remove_containers()
    names = namespaces_with_prefix(PREFIX)
    remove_namespaces(names)
    _stop_docker()
    subprocess.run(["rm", "-rf", str(WORKDIR)], check=False)
    print(f"removed {len(names)} namespaces" if names else "lab was not up")
    return 0


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "up"
    commands = {"up": up, "down": down, "status": status}
    if cmd not in commands:
        print(f"usage: scripts/lab [{'|'.join(commands)}]", file=sys.stderr)
        return 2
    return commands[cmd]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
