"""Crash faults on namespace hosts: a corrupt state file stops a launch with one line and touches nothing;
kill -9 of a router under traffic (the kernel fast path keeps forwarding; the sleeve is back soon after a relaunch)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time

from .conftest import wait_for
from .helpers import full_mesh, launch_chain, report
from .overlay import container, wait_ping


def hashes(datadir) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(datadir.iterdir()) if p.is_file()}


def test_corrupt_state_file_stops_launch_with_one_line_and_nothing_lost(lab_factory):
    lab = lab_factory(1)
    h = lab.host(1)
    h.weave("launch", "--nickname", "h1")
    c = lab.add_container(h, "c1")
    h.weave("attach", f"netns:{c}")   # IPAM allocates: ipam.json and attachments.json are written
    h.weave("stop")
    ipam = h.datadir / "ipam.json"
    assert {"peer-name", "targets.json", "attachments.json", "ipam.json"} <= set(os.listdir(h.datadir))
    ipam.write_bytes(ipam.read_bytes()[: ipam.stat().st_size // 2])   # a write cut short
    before = hashes(h.datadir)
    p = h.weave("launch", "--nickname", "h1", check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1, p
    assert len(lines) == 1, p.stderr
    assert re.fullmatch(rf"weave: state file {re.escape(str(ipam))} is corrupt \(.+\); "
                        r"move it away or run `weave reset`", lines[0]), lines[0]
    assert hashes(h.datadir) == before   # nothing rewritten, nothing deleted, no temp file
    assert h.router_pid() is None or dead(h.router_pid())


def ping_log(ns: str, ip: str, count: int) -> subprocess.Popen:
    """ping every 0.1 s, each reply line stamped with its epoch time (-D)."""
    return subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-D", "-n", "-i", "0.1", "-W", "1", "-c", str(count),
                             ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def replies(out: str) -> list[tuple[float, int]]:
    return [(float(t), int(s)) for t, s in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", out, re.M)]


def dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"   # killed, not reaped yet
    except FileNotFoundError:
        return True


def kill9(h) -> int:
    pid = h.router_pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: dead(pid), 5, 0.02, "router gone")
    return pid


def two_hosts(lab_factory, *flags):
    lab = lab_factory(2)
    names = launch_chain(lab.hosts, *flags)
    wait_for(lambda: full_mesh(lab.hosts, names), 15, what="mesh")
    c1 = container(lab, lab.host(1), "c1", "10.0.0.1/24")
    container(lab, lab.host(2), "c2", "10.0.0.2/24")
    wait_ping(c1, "10.0.0.2")
    return lab, names, c1


def test_fast_path_keeps_forwarding_while_the_router_is_dead(lab_factory):
    """The survivor keeps the dead peer's VXLAN FDB entries and source-filter membership for a grace period."""
    lab, names, c1 = two_hosts(lab_factory)
    wait_for(lambda: {c.get("datapath") for c in report(lab.host(1))["connections"]
                      if c["state"] == "established"} == {"fastdp"}, 10, what="fastdp")
    count = 90   # 9 s of pings; the router dies after 1 s and is relaunched 4 s later
    ping = ping_log(c1, "10.0.0.2", count)
    time.sleep(1.0)
    pid = kill9(lab.host(1))
    killed = time.time()
    time.sleep(4.0)
    # The relaunched router keeps its VXLAN FDB and source filter until its connections are back.
    lab.host(1).weave("launch", "--nickname", "h1", lab.host(2).ip)
    relaunched = time.time()
    out, _ = ping.communicate(timeout=30)
    assert dead(pid)
    got = replies(out)
    after = [t for t, _ in got if t > killed]
    lost = count - len(got)
    print(f"fast path, router killed: {len(got)}/{count} replies, {len(after)} after the kill, {lost} lost")
    assert lost <= 3, out
    assert after and after[-1] - killed >= 3.0, out   # replies kept coming for seconds with no router
    assert [t for t in after if t > relaunched], out
    wait_for(lambda: {c.get("datapath") for c in report(lab.host(1))["connections"]
                      if c["state"] == "established"} == {"fastdp"}, 10, what="fastdp after the relaunch")


def test_sleeve_traffic_back_soon_after_relaunch(lab_factory):
    flags = ("--password", "s3cret")
    lab, names, c1 = two_hosts(lab_factory, *flags)
    h1, h2 = lab.hosts
    wait_for(lambda: {c.get("datapath") for c in report(h1)["connections"] if c["state"] == "established"}
             == {"sleeve"}, 10, what="sleeve")
    kill9(h1)
    time.sleep(1.0)
    ping = ping_log(c1, "10.0.0.2", 300)
    try:
        t0 = time.time()
        h1.weave("launch", "--nickname", "h1", *flags, h2.ip)
        launched = time.time()
        wait_for(lambda: any(t > t0 for t, _ in replies_so_far(ping)), 15, 0.05, "ping after relaunch")
    finally:
        ping.kill()
    first = min(t for t, _ in replies_so_far(ping) if t > t0)
    print(f"sleeve: launch took {launched - t0:.2f}s, first reply {first - t0:.2f}s after the relaunch started "
          f"({first - launched:.2f}s after it returned)")
    assert first - t0 <= 3.0


_seen: dict[int, str] = {}


def replies_so_far(p: subprocess.Popen) -> list[tuple[float, int]]:
    """Replies printed so far by a running ping (reads what is available without blocking)."""
    fd = p.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        chunk = os.read(fd, 1 << 16).decode()
    except BlockingIOError:
        chunk = ""
    _seen[p.pid] = _seen.get(p.pid, "") + chunk
    return replies(_seen[p.pid])
