"""Docker containers on lab hosts: `weave run` inside a host's namespace, `docker exec` to look inside."""

import json
import subprocess
import time

from weavenet.lab.netns import Host


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {p.stderr.strip()}")
    return p


def dexec(name: str, *cmd: str, check: bool = False) -> subprocess.CompletedProcess:
    return docker("exec", name, *cmd, check=check)


def dping(name: str, ip: str, *extra: str) -> bool:
    return dexec(name, "ping", "-c", "1", "-W", "1", *extra, ip).returncode == 0


def wait_dping(name: str, ip: str, timeout: float = 10, *extra: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dping(name, ip, *extra):
            return
    raise AssertionError(f"{ip} not reachable from container {name} within {timeout}s")


def never_dping(name: str, ip: str, tries: int = 3, *extra: str) -> bool:
    """True if no ping gets through in `tries` attempts (each waits 1 s for a reply)."""
    return not any(dping(name, ip, *extra) for _ in range(tries))


def ethwe_cidrs(name: str) -> list[str]:
    out = dexec(name, "ip", "-o", "-4", "addr", "show", "dev", "ethwe").stdout
    return [line.split()[3] for line in out.splitlines() if " inet " in line]


def containers_with_label(label: str) -> list[str]:
    return docker("ps", "-aq", "--filter", f"label={label}").stdout.split()


def remove_labelled(label: str) -> None:
    ids = containers_with_label(label)
    if ids:
        docker("rm", "-f", *ids, check=False)


def ps_rows(h: Host) -> list[dict]:
    return json.loads(h.weave("report").stdout)["router"]["containers"]


def veth_ports(h: Host) -> list[str]:
    out = h.exec("ip", "-o", "link", "show", "type", "veth").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if "vethwepl" in line]
