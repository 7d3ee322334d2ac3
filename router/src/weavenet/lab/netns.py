"""A lab of network namespaces joined by a bridge: the underlay for demos, tests and benchmarks.

Everything lives inside namespaces the lab creates (the bridge too), on a documentation range, so
nothing touches the machine's own network. ``close()`` removes it all, processes included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def sh(*args: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@dataclass
class Host:
    lab: NetnsLab
    index: int
    netns: str
    ip: str
    rundir: Path
    datadir: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "WEAVE_RUNDIR": str(self.rundir), "WEAVE_DATADIR": str(self.datadir)}

    def weave(self, *args: str, check: bool = True, timeout: float = 30, env: dict | None = None
              ) -> subprocess.CompletedProcess:
        cmd = ["ip", "netns", "exec", self.netns, self.lab.weave_cmd, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**self.env, **(env or {})})
        if check and p.returncode != 0:
            raise RuntimeError(f"weave {' '.join(args)} on {self.netns} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh(*args, check=check, netns=self.netns)

    def router_pid(self) -> int | None:
        try:
            return int((self.rundir / "weave.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None


@dataclass
class NetnsLab:
    """`n` hosts h1..hn on 192.0.2.0/24 (more than 250 hosts spill into 198.51.100.0/24)."""

    n: int
    prefix: str = field(default_factory=lambda: f"wn{os.getpid() % 100000}")
    weave_cmd: str = field(default_factory=lambda: shutil.which("weave") or "weave")
    hosts: list[Host] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    workdir: Path | None = None

    def __post_init__(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.switch = f"{self.prefix}-sw"

    def __enter__(self) -> NetnsLab:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def address(i: int) -> str:
        return f"192.0.2.{i}" if i < 251 else f"198.51.100.{i - 250}"

    def create(self) -> None:
        sh("ip", "netns", "add", self.switch)
        sh("ip", "link", "add", "br0", "type", "bridge", netns=self.switch)
        sh("ip", "link", "set", "br0", "up", netns=self.switch)
        for i in range(1, self.n + 1):
            self.add_host(i)
        self.wait_underlay()

    def wait_underlay(self, timeout: float = 20.0) -> None:
        """veth carrier comes up asynchronously (linkwatch, slower under load): wait until every
        switch port forwards, so the first SYN or ARP of a test is not lost."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = sh("ip", "-o", "link", "show", "master", "br0", netns=self.switch).stdout
            if out.count("state UP") >= len(self.hosts):
                return
            time.sleep(0.05)
        raise RuntimeError(f"lab underlay not up after {timeout}s")

    def add_host(self, i: int) -> Host:
        ns = f"{self.prefix}-h{i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", self.switch)
        sh("ip", "link", "set", f"p{i}", "master", "br0", "up", netns=self.switch)
        ip = self.address(i)
        plen = "24"
        sh("ip", "addr", "add", f"{ip}/{plen}", "dev", "eth0", netns=ns)
        sh("ip", "link", "set", "eth0", "up", netns=ns)
        sh("ip", "link", "set", "lo", "up", netns=ns)
        if self.n > 250:
            other = "198.51.100.0/24" if i < 251 else "192.0.2.0/24"
            sh("ip", "route", "add", other, "dev", "eth0", netns=ns)
        host = Host(self, i, ns, ip, self.workdir / f"h{i}" / "run", self.workdir / f"h{i}" / "data")
        self.hosts.append(host)
        if len(self.hosts) > self.n:  # a host added to a running lab
            self.wait_underlay()
        return host

    def add_container(self, host: Host, name: str) -> str:
        """A bare namespace standing in for a container on `host` (removed with the lab)."""
        ns = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", netns=ns)
        self.containers.append(ns)
        return ns

    def host(self, i: int) -> Host:
        return self.hosts[i - 1]

    def kill_routers(self) -> None:
        for h in self.hosts:
            pid = h.router_pid()
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        self.kill_routers()
        remove_namespaces(self.containers + [h.netns for h in self.hosts] + [self.switch])
        shutil.rmtree(self.workdir, ignore_errors=True)


def remove_namespaces(names: list[str]) -> None:
    """Kill whatever runs in these namespaces, then delete them."""
    for ns in names:
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.05)
    for ns in names:
        sh("ip", "netns", "del", ns, check=False)


def namespaces_with_prefix(prefix: str) -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(prefix + "-")]
