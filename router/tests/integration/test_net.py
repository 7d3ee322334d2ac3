"""weavenet.net against real namespaces.

Each test gets a fresh "host" namespace standing in for the one the router runs in: the API is
called from a thread that has setns()-ed into it (``Host.run``), exactly as the package expects.
Containers are further namespaces. Everything is deleted afterwards, failures included.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from weavenet import net
from weavenet.datapath.icmp import checksum
from weavenet.net import bridge
from weavenet.net.arp import gratuitous_arp_frame
from weavenet.net.netns import run_in_netns

_seq = itertools.count()
ZERO = "00:00:00:00:00:00"
ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806


def sh(*args: str, ns: str | None = None, check: bool = True) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed: {p.stderr.strip()}")
    return p.stdout


class Ns:
    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/run/netns/{name}"

    def run(self, fn: Callable, *args, **kwargs):
        """Call fn inside this namespace (in a helper thread) and return its result."""
        return run_in_netns(self.path, fn, *args, **kwargs)

    def sh(self, *args: str, check: bool = True) -> str:
        return sh(*args, ns=self.name, check=check)

    def links(self) -> list[str]:
        return [ln.split(":")[1].strip().split("@")[0] for ln in self.sh("ip", "-o", "link", "show").splitlines()]


@pytest.fixture
def make_ns():
    made: list[Ns] = []

    def make(tag: str) -> Ns:
        ns = Ns(f"wnt{os.getpid() % 100000}-{next(_seq)}{tag}")
        sh("ip", "netns", "add", ns.name)
        made.append(ns)
        # Keep IPv6 quiet (no DAD/MLD/RS chatter): the tests look at the frames they cause.
        ns.sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1")
        return ns

    yield make
    for ns in made:
        sh("ip", "netns", "del", ns.name, check=False)


@pytest.fixture
def host(make_ns) -> Ns:
    return make_ns("h")


@pytest.fixture
def weave(host) -> Ns:
    """A host namespace with the bridge already there."""
    host.run(net.ensure_bridge)
    return host


def ping(src: Ns, dst: str, timeout: float = 5.0) -> bool:
    """ICMP echo from inside ``src`` until a reply or the timeout (`ping -c1 -W`, tolerant of a busy
    machine: it asks again every half second; iputils is not in the CI image anyway)."""

    def body() -> bool:
        ident = random.randrange(1, 0xFFFF)
        msg = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"weavenet-test"
        msg = msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            while (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(OSError):
                    s.sendto(msg, (dst, 0))
                resend = time.monotonic() + min(0.5, left)
                while (wait := resend - time.monotonic()) > 0:
                    s.settimeout(wait)
                    try:
                        data, addr = s.recvfrom(2048)
                    except TimeoutError:
                        break
                    ihl = (data[0] & 0xF) * 4
                    typ, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                    if addr[0] == dst and typ == 0 and rid == ident:
                        return True
        return False

    return src.run(body)


def packet_socket(ns: Ns, ifname: str, proto: int = ETH_P_ALL) -> socket.socket:
    """An AF_PACKET socket on ``ifname`` inside ``ns`` (sockets keep the namespace they were born in)."""

    def body() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        s.bind((ifname, proto))
        return s

    return ns.run(body)


def wait_frame(fd_or_sock, match: Callable[[bytes], bool], timeout: float = 5.0, read=None) -> bytes | None:
    """Read frames until one matches (or the timeout passes)."""
    read = read or (lambda: fd_or_sock.recv(65535))
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd_or_sock], [], [], left)
        if ready:
            frame = read()
            if match(frame):
                return frame
    return None


def is_garp(frame: bytes, ip: str, mac: str | None = None) -> bool:
    if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[:6] != b"\xff" * 6:
        return False
    op, sha, spa, tpa = struct.unpack("!6xH6s4s6x4s", frame[14:42])
    addr = socket.inet_aton(ip)
    return op == 1 and spa == addr == tpa and (mac is None or sha == bytes.fromhex(mac.replace(":", "")))


def admin_up(ip_link_show: str) -> bool:
    """IFF_UP, from `ip link show` output (operstate of a bridge without ports is UNKNOWN)."""
    return "UP" in ip_link_show.split("<", 1)[1].split(">", 1)[0].split(",")


# --- bridge, VXLAN, port flags, TAP -------------------------------------------------------------


def test_bridge_vxlan_tap_are_idempotent_and_flagged(host):
    assert host.run(net.ensure_bridge) == host.run(net.ensure_bridge)
    br = host.sh("ip", "-d", "link", "show", "weave")
    assert "mtu 1376" in br and "bridge " in br and admin_up(br)
    bridge_mac = json.loads(host.sh("ip", "-j", "link", "show", "weave"))[0]["address"]

    mac = host.run(net.ensure_vxlan)
    assert host.run(net.ensure_vxlan) == mac
    vx = host.sh("ip", "-d", "link", "show", "vxlan-6784")
    assert mac in vx and "vxlan id 6784" in vx and "dstport 6784" in vx and "master weave" in vx and "mtu 1376" in vx
    vxlan_line = next(ln for ln in vx.splitlines() if "vxlan id" in ln)
    assert " remote " not in vxlan_line and " group " not in vxlan_line and " local " not in vxlan_line
    port = host.sh("bridge", "-d", "link", "show", "dev", "vxlan-6784")
    for flag in ("isolated on", "learning on", "flood on", "mcast_flood on", "bcast_flood on"):
        assert flag in port, (flag, port)

    tap = host.run(net.Tap.open)
    try:
        assert (tap.name, tap.vnet_hdr) == ("weave-tap", True)
        t = host.sh("ip", "-d", "link", "show", "weave-tap")
        assert tap.mac in t and "tun type tap" in t and "vnet_hdr on" in t
        assert "master weave" in t and "mtu 1376" in t and "qlen 10000" in t
        assert "isolated on" in host.sh("bridge", "-d", "link", "show", "dev", "weave-tap")
        with pytest.raises(RuntimeError, match="already open"):
            host.run(net.Tap.open)
    finally:
        tap.close()
    assert "weave-tap" not in host.links()  # not persistent: gone with its fd
    host.run(net.Tap.open).close()  # and can be opened again

    # The bridge MAC is pinned: ports joining do not change it.
    assert json.loads(host.sh("ip", "-j", "link", "show", "weave"))[0]["address"] == bridge_mac


def test_ensure_refuses_wrong_kinds_and_recreates_changed_vxlan(weave):
    weave.run(net.ensure_vxlan)
    with pytest.raises(RuntimeError, match="not a bridge"):
        weave.run(net.ensure_bridge, "vxlan-6784")
    with pytest.raises(RuntimeError, match="not a vxlan"):
        weave.run(net.ensure_vxlan, "weave")
    with pytest.raises(RuntimeError, match="does not exist"):
        weave.run(net.ensure_vxlan, "vx2", bridge="nobridge")
    with pytest.raises(ValueError, match="bad VNI"):
        weave.run(net.ensure_vxlan, vni=1 << 24)
    weave.run(net.fdb_append, "vxlan-6784", ZERO, "192.0.2.9")
    weave.run(net.ensure_vxlan, vni=42, port=4789)  # cannot change in place: recreated
    vx = weave.sh("ip", "-d", "link", "show", "vxlan-6784")
    assert "vxlan id 42" in vx and "dstport 4789" in vx and "master weave" in vx
    assert "isolated on" in weave.sh("bridge", "-d", "link", "show", "dev", "vxlan-6784")
    assert weave.run(net.fdb_entries, "vxlan-6784") == []


def test_set_port_flags(weave):
    weave.run(net.ensure_vxlan)
    weave.run(net.set_port_flags, "vxlan-6784", isolated=False, flood=False)
    port = weave.sh("bridge", "-d", "link", "show", "dev", "vxlan-6784")
    assert "isolated off" in port and " flood off" in port and "mcast_flood on" in port
    assert weave.run(net.port_flags, "vxlan-6784")["isolated"] is False
    with pytest.raises(ValueError, match="unknown bridge port flag"):
        weave.run(net.set_port_flags, "vxlan-6784", hairpin=True)
    with pytest.raises(RuntimeError, match="not a bridge port"):
        weave.run(net.set_port_flags, "weave", isolated=True)
    weave.run(net.delete_link, "vxlan-6784")
    weave.run(net.delete_link, "vxlan-6784")  # missing is fine
    assert "vxlan-6784" not in weave.links()


# --- FDB ------------------------------------------------------------------------------------------


def test_fdb_append_delete_flush(weave):
    weave.run(net.ensure_vxlan)
    vx = "vxlan-6784"
    for dst in ("192.0.2.1", "192.0.2.2", "192.0.2.2"):
        weave.run(net.fdb_append, vx, ZERO, dst)
    weave.run(net.fdb_append, vx, "AA:BB:CC:00:00:01", "192.0.2.1")
    assert sorted(weave.run(net.fdb_entries, vx)) == [
        (ZERO, "192.0.2.1"), (ZERO, "192.0.2.2"), ("aa:bb:cc:00:00:01", "192.0.2.1")]
    shown = weave.sh("bridge", "fdb", "show", "dev", vx)
    assert f"{ZERO} dst 192.0.2.1 self permanent" in shown and f"{ZERO} dst 192.0.2.2 self permanent" in shown

    weave.run(net.fdb_delete, vx, ZERO, "192.0.2.2")
    weave.run(net.fdb_delete, vx, ZERO, "192.0.2.2")  # missing is fine
    assert (ZERO, "192.0.2.2") not in weave.run(net.fdb_entries, vx)
    weave.run(net.fdb_replace, vx, "aa:bb:cc:00:00:02", "192.0.2.3")
    # A fast path falling back keeps its heartbeat entry: everything else towards the peer goes.
    assert weave.run(net.fdb_flush_dst, vx, "192.0.2.1", frozenset({"AA:BB:CC:00:00:01"})) == 1
    assert sorted(weave.run(net.fdb_entries, vx)) == [("aa:bb:cc:00:00:01", "192.0.2.1"),
                                                      ("aa:bb:cc:00:00:02", "192.0.2.3")]
    weave.run(net.fdb_append, vx, ZERO, "192.0.2.1")
    assert weave.run(net.fdb_flush_dst, vx, "192.0.2.1") == 2
    assert weave.run(net.fdb_entries, vx) == [("aa:bb:cc:00:00:02", "192.0.2.3")]
    assert weave.run(net.fdb_flush_dst, vx, "192.0.2.1") == 0

    with pytest.raises(ValueError, match="bad MAC"):
        weave.run(net.fdb_append, vx, "not-a-mac", "192.0.2.1")
    with pytest.raises(ValueError, match="bad IP"):
        weave.run(net.fdb_append, vx, ZERO, "192.0.2.300")
    with pytest.raises(RuntimeError, match="not a vxlan"):
        weave.run(net.fdb_append, "weave", ZERO, "192.0.2.1")


def test_vxlan_static_entries_between_two_hosts_and_flush(make_ns):
    """Two hosts on an underlay veth, a container on each: the VXLAN device learns nothing (a frame's
    outer source proves nothing), the router's static entries carry unicast; flushing a peer cuts it."""
    a, b = make_ns("a"), make_ns("b")
    sh("ip", "link", "add", "u0", "netns", a.name, "type", "veth", "peer", "name", "u0", "netns", b.name)
    for ns, ip in ((a, "192.0.2.1/24"), (b, "192.0.2.2/24")):
        ns.sh("ip", "addr", "add", ip, "dev", "u0")
        ns.sh("ip", "link", "set", "u0", "up")
        ns.run(net.ensure_bridge)
        ns.run(net.ensure_vxlan)
        assert "nolearning" in ns.sh("ip", "-d", "link", "show", "vxlan-6784")
    a.run(net.fdb_append, "vxlan-6784", ZERO, "192.0.2.2")
    b.run(net.fdb_append, "vxlan-6784", ZERO, "192.0.2.1")
    ca, cb = make_ns("ca"), make_ns("cb")
    mac_a = a.run(net.attach, ca.path, ["10.0.0.1/24"])["mac"]
    mac_b = b.run(net.attach, cb.path, ["10.0.0.2/24"])["mac"]

    assert ping(cb, "10.0.0.1") and ping(ca, "10.0.0.2")  # unknown unicast floods to the default entry
    assert (mac_b, "192.0.2.2") not in a.run(net.fdb_entries, "vxlan-6784")  # nothing learned
    # What each router advertises: the MACs its bridge learned on local ports.
    assert mac_b in b.run(bridge.local_macs, "weave", ["vxlan-6784"], 100)
    a.run(bridge.fdb_apply, "vxlan-6784", [(mac_b, "192.0.2.2")], [])
    b.run(bridge.fdb_apply, "vxlan-6784", [(mac_a, "192.0.2.1")], [])
    assert (mac_b, "192.0.2.2") in a.run(net.fdb_entries, "vxlan-6784")
    assert ping(ca, "10.0.0.2")
    assert a.run(net.fdb_flush_dst, "vxlan-6784", "192.0.2.2") >= 2
    assert [e for e in a.run(net.fdb_entries, "vxlan-6784") if e[1] == "192.0.2.2"] == []
    assert not ping(ca, "10.0.0.2", timeout=1.0)


def test_bridge_fdb_flush_port(weave, make_ns):
    c1, c2 = make_ns("c"), make_ns("c")
    p1 = weave.run(net.attach, c1.path, ["10.0.0.1/24"])
    p2 = weave.run(net.attach, c2.path, ["10.0.0.2/24"])
    assert ping(c1, "10.0.0.2")

    def learned(port: str) -> set[str]:
        out = weave.sh("bridge", "fdb", "show", "br", "weave", "brport", port)
        return {ln.split()[0] for ln in out.splitlines() if "permanent" not in ln}

    assert p1["mac"] in learned(p1["ifname"])
    assert weave.run(net.bridge_fdb_flush_port, p1["ifname"], {"02:00:00:00:00:99"}) == 0
    assert weave.run(net.bridge_fdb_flush_port, p1["ifname"], {p1["mac"].upper()}) == 1
    assert p1["mac"] not in learned(p1["ifname"]) and p2["mac"] in learned(p2["ifname"])
    assert weave.run(net.bridge_fdb_flush_port, p2["ifname"]) >= 1
    assert learned(p2["ifname"]) == set()
    # The port's own (permanent) entry stays.
    assert "permanent" in weave.sh("bridge", "fdb", "show", "br", "weave", "brport", p2["ifname"])


# --- attach / detach / expose -------------------------------------------------------------------


def test_attach_two_containers_ping_and_repeat_is_noop(weave, make_ns):
    c1, c2 = make_ns("c"), make_ns("c")
    r1 = weave.run(net.attach, c1.path, ["10.0.0.1/24"])
    assert r1["ifname"].startswith("vethwepl") and len(r1["ifname"]) <= 15
    assert r1["addresses"] == ["10.0.0.1/24"]
    assert r1["mac"] in c1.sh("ip", "link", "show", "ethwe")
    assert "master weave" in weave.sh("ip", "link", "show", r1["ifname"])
    assert "state UP" in weave.sh("ip", "link", "show", r1["ifname"])
    ethwe = c1.sh("ip", "-d", "link", "show", "ethwe")
    assert "mtu 1376" in ethwe and "state UP" in ethwe
    assert "UP" in c1.sh("ip", "link", "show", "lo")

    assert weave.run(net.attach, c1.path, ["10.0.0.1/24"]) == r1
    assert c1.sh("ip", "-o", "-4", "addr", "show", "dev", "ethwe").count("10.0.0.1/24") == 1
    assert weave.run(net.attach, c2.path, ["10.0.0.2/24"])["ifname"] != r1["ifname"]
    assert ping(c1, "10.0.0.2") and ping(c2, "10.0.0.1")

    assert weave.run(net.addresses, c1.path) == ["10.0.0.1/24"]
    assert weave.run(net.ethwe_mac, c1.path) == r1["mac"]
    r = weave.run(net.attach, c1.path, ["10.0.0.3/24"])
    assert r == {**r1, "addresses": ["10.0.0.1/24", "10.0.0.3/24"]}


def test_attach_by_pid_is_the_same_namespace(weave, make_ns):
    c = make_ns("c")
    proc = subprocess.Popen(["ip", "netns", "exec", c.name, "sleep", "60"])
    try:
        for _ in range(100):  # until `ip netns exec` has entered the namespace and exec'ed sleep
            if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == os.stat(c.path).st_ino:
                break
            time.sleep(0.02)
        path = net.resolve_target(f"pid:{proc.pid}")
        assert path == f"/proc/{proc.pid}/ns/net"
        r1 = weave.run(net.attach, path, ["10.0.0.1/24"])
        r2 = weave.run(net.attach, net.resolve_target(f"netns:{c.name}"), ["10.0.0.1/24"])
        assert r1 == r2
    finally:
        proc.kill()
        proc.wait()


def test_attach_announces_with_gratuitous_arp(weave, make_ns):
    c = make_ns("c")
    s = packet_socket(weave, "weave", ETH_P_ARP)
    with s:
        r = weave.run(net.attach, c.path, ["10.0.0.7/24"])
        assert wait_frame(s, lambda f: is_garp(f, "10.0.0.7", r["mac"]))


def test_detach_keeps_ethwe_until_last_address(weave, make_ns):
    c = make_ns("c")
    host_if = weave.run(net.attach, c.path, ["10.0.0.1/24", "10.0.0.5/24", "10.1.0.1/16"])["ifname"]
    # Removing a primary address must not take the subnet's secondaries with it.
    left = {"10.0.0.5/24", "10.1.0.1/16"}
    assert set(weave.run(net.detach, c.path, ["10.0.0.1/24"])["addresses"]) == left
    assert set(weave.run(net.detach, c.path, ["10.9.9.9/24"])["addresses"]) == left
    assert "ethwe" in c.links() and host_if in weave.links()
    assert weave.run(net.detach, c.path, ["10.0.0.5/24", "10.1.0.1/16"]) == {"addresses": []}
    assert "ethwe" not in c.links() and host_if not in weave.links()
    with pytest.raises(ValueError, match="no ethwe"):
        weave.run(net.detach, c.path)
    assert weave.run(net.addresses, c.path) == [] and weave.run(net.ethwe_mac, c.path) is None

    weave.run(net.attach, c.path, ["10.0.0.1/24", "10.0.0.2/24"])
    assert weave.run(net.detach, c.path) == {"addresses": []}  # None: everything
    assert "ethwe" not in c.links()


def test_expose_and_hide(weave, make_ns):
    c = make_ns("c")
    weave.run(net.attach, c.path, ["10.0.0.1/24"])
    s = packet_socket(c, "ethwe", ETH_P_ARP)
    with s:
        assert weave.run(net.expose, "10.0.0.254/24") is True
        assert wait_frame(s, lambda f: is_garp(f, "10.0.0.254"))
    assert weave.run(net.expose, "10.0.0.254/24") is False
    assert weave.run(net.exposed) == ["10.0.0.254/24"]
    assert "10.0.0.254/24" in weave.sh("ip", "addr", "show", "dev", "weave")
    assert ping(weave, "10.0.0.1") and ping(c, "10.0.0.254")
    with pytest.raises(ValueError, match="already exposed"):
        weave.run(net.expose, "10.0.0.254/16")

    assert weave.run(net.hide, "10.0.0.254/24") is True
    assert weave.run(net.hide, "10.0.0.254/24") is False
    assert weave.run(net.exposed) == []
    assert not ping(weave, "10.0.0.1", timeout=1.0)
    with pytest.raises(RuntimeError, match="does not exist"):
        weave.run(net.expose, "10.0.0.254/24", bridge="nobridge")


@pytest.mark.parametrize(("cidr", "why"), [
    ("10.0.0.0/24", "network address"),
    ("10.0.0.255/24", "broadcast address"),
    ("10.0.0.1", "expected ADDRESS/PREFIXLEN"),
    ("10.0.0.300/24", "expected ADDRESS/PREFIXLEN"),
    ("10.0.0.1/33", "expected ADDRESS/PREFIXLEN"),
    ("224.0.0.5/24", "cannot be an interface address"),
])
def test_bad_cidr_is_a_clear_error_and_leaves_nothing(weave, make_ns, cidr, why):
    c = make_ns("c")
    with pytest.raises(ValueError, match=why) as e:
        weave.run(net.attach, c.path, ["10.0.0.1/24", cidr])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=why):
        weave.run(net.expose, cidr)
    assert "ethwe" not in c.links()
    assert not [n for n in weave.links() if n.startswith("vethwepl")]


def test_failure_after_creating_the_veth_rolls_back(weave, make_ns):
    c = make_ns("c")  # IPv6 is disabled in test namespaces: adding fd00::1 fails after the veth exists
    with pytest.raises(RuntimeError, match="cannot add fd00::1/64 to ethwe"):
        weave.run(net.attach, c.path, ["10.0.0.1/24", "fd00::1/64"])
    assert "ethwe" not in c.links()
    assert not [n for n in weave.links() if n.startswith("vethwepl")]
    # With ethwe already there, only this call's addresses are rolled back.
    weave.run(net.attach, c.path, ["10.0.0.1/24"])
    with pytest.raises(RuntimeError):
        weave.run(net.attach, c.path, ["10.0.0.2/24", "fd00::1/64"])
    assert weave.run(net.addresses, c.path) == ["10.0.0.1/24"]


def test_bad_targets(weave, make_ns):
    c = make_ns("c")
    assert net.resolve_target(f"netns:{c.name}") == c.path
    assert net.resolve_target(f"pid:{os.getpid()}") == f"/proc/{os.getpid()}/ns/net"
    for bad in ("bogus", "docker:x", "netns:", "pid:"):
        with pytest.raises(ValueError, match="expected netns:NAME or pid:PID"):
            net.resolve_target(bad)
    for bad, why in (("netns:wnt-does-not-exist", "no network namespace"), ("netns:../x", "bad netns name"),
                     ("pid:abc", "bad pid"), ("pid:999999999", "no process")):
        with pytest.raises(ValueError, match=why):
            net.resolve_target(bad)
    with pytest.raises(ValueError, match="no network namespace"):
        weave.run(net.attach, "/run/netns/wnt-does-not-exist", ["10.0.0.1/24"])
    with pytest.raises(ValueError, match="not a network namespace"):
        weave.run(net.attach, "/etc/hostname", ["10.0.0.1/24"])
    with pytest.raises(RuntimeError, match="does not exist"):
        weave.run(net.attach, c.path, ["10.0.0.1/24"], bridge="nobridge")
    assert not [n for n in weave.links() if n.startswith("vethwepl")]


# --- TAP datapath ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vnet_hdr", [True, False])
def test_tap_frames_reach_containers_and_back(weave, make_ns, vnet_hdr):
    weave.run(net.ensure_vxlan)
    c = make_ns("c")
    mac_c = weave.run(net.attach, c.path, ["10.0.0.1/24"])["mac"]
    tap = weave.run(net.Tap.open, vnet_hdr=vnet_hdr)
    hdr = b"\0" * 10 if vnet_hdr else b""
    # Sees every frame the bridge hands to the VXLAN port (packet taps see outgoing frames too).
    vxlan_tap = packet_socket(weave, "vxlan-6784")
    try:
        def from_tap(match: Callable[[bytes], bool]) -> bytes | None:
            frame = wait_frame(tap, lambda f: match(f[len(hdr):]), read=tap.read)
            return frame and frame[len(hdr):]

        # A broadcast ARP request from a "remote" MAC written to the TAP reaches the container ...
        fake_mac, fake_ip = "02:00:00:00:00:01", "10.0.0.99"
        request = bytearray(gratuitous_arp_frame(fake_mac, fake_ip))
        request[38:42] = socket.inet_aton("10.0.0.1")  # who-has 10.0.0.1 tell 10.0.0.99
        request = bytes(request)
        with packet_socket(c, "ethwe", ETH_P_ARP) as s:
            tap.write(hdr + request)
            assert wait_frame(s, lambda f: f[:42] == request[:42])
        # ... whose kernel answers with a unicast reply, delivered to the TAP (learned the fake MAC).
        reply = from_tap(lambda f: f[:6] == bytes.fromhex("020000000001") and f[12:14] == b"\x08\x06")
        assert reply is not None and reply[6:12] == bytes.fromhex(mac_c.replace(":", ""))
        # The isolated TAP port never floods into the isolated VXLAN port (the flood that reached
        # the container is long over by now).
        assert wait_frame(vxlan_tap, lambda f: f[:42] == request[:42], timeout=0.2) is None

        # A broadcast sent by the container is read from the TAP, and goes to the VXLAN port too.
        marker = os.urandom(8)
        frame = b"\xff" * 6 + bytes.fromhex(mac_c.replace(":", "")) + b"\x88\xb5" + marker + b"\0" * 38

        def send() -> None:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
                s.bind(("ethwe", 0))
                s.send(frame)

        c.run(send)
        assert from_tap(lambda f: f[14:22] == marker) == frame
        assert wait_frame(vxlan_tap, lambda f: f[14:22] == marker) == frame
    finally:
        vxlan_tap.close()
        tap.close()


def test_tap_gets_gso_superframes(weave, make_ns):
    """With offloads on, TCP from a container reaches the TAP as GSO frames bigger than the MTU."""
    c1, c2 = make_ns("c"), make_ns("c")
    weave.run(net.attach, c1.path, ["10.0.0.1/24"])
    p2 = weave.run(net.attach, c2.path, ["10.0.0.2/24"])
    tap = weave.run(net.Tap.open)
    threads: list[threading.Thread] = []
    try:
        # Keep c2's MAC unknown to the bridge so that frames to it are flooded, TAP included.
        weave.run(net.set_port_flags, p2["ifname"], learning=False)
        weave.run(net.bridge_fdb_flush_port, p2["ifname"])
        server = c2.run(socket.create_server, ("10.0.0.2", 5001))
        client = c1.run(socket.create_connection, ("10.0.0.2", 5001), 10)

        def sink() -> None:
            with server, server.accept()[0] as conn:
                while conn.recv(1 << 16):
                    pass

        def source() -> None:
            with client:
                client.sendall(b"x" * 4_000_000)

        threads = [threading.Thread(target=f, daemon=True) for f in (sink, source)]
        for t in threads:
            t.start()
        big = wait_frame(tap, lambda f: len(f) > 10 + 14 + 1376 and f[10 + 12:10 + 14] == b"\x08\x00", read=tap.read)
        assert big is not None, "no GSO frame reached the TAP"
        flags, gso_type, hdr_len, gso_size = struct.unpack("<BBHH", big[:6])
        assert gso_type == 1 and 0 < gso_size <= 1376 - 40 and hdr_len >= 14 + 20 + 20  # VIRTIO_NET_HDR_GSO_TCPV4
    finally:
        tap.close()
        for t in threads:
            t.join(timeout=10)


def test_run_in_netns_reports_bad_paths(tmp_path: Path):
    with pytest.raises(ValueError, match="cannot open network namespace"):
        run_in_netns(str(tmp_path / "nope"), lambda: None)


def test_fastdp_heartbeats_are_read_on_the_tick_with_their_arrival_time(make_ns):
    """The heartbeat socket is read on the router's ticks, not per frame: each heartbeat carries the kernel's
    arrival stamp (on time.monotonic()'s clock), a read takes at most `limit` (the rest wait for the next),
    frames of other ethertypes and our own never reach it."""
    from weavenet.datapath import fastdp

    a, b = make_ns("a"), make_ns("b")
    sh("ip", "link", "add", "u0", "netns", a.name, "type", "veth", "peer", "name", "u0", "netns", b.name)
    macs = {}
    for ns, ip in ((a, "192.0.2.1/24"), (b, "192.0.2.2/24")):
        ns.sh("ip", "addr", "add", ip, "dev", "u0")
        ns.sh("ip", "link", "set", "u0", "up")
        ns.run(net.ensure_bridge)
        macs[ns.name] = ns.run(net.ensure_vxlan)
    a.run(net.fdb_append, "vxlan-6784", macs[b.name], "192.0.2.2")
    sa = a.run(fastdp.open_heartbeat_socket, "vxlan-6784")
    sb = b.run(fastdp.open_heartbeat_socket, "vxlan-6784")
    try:
        name_a = "02:00:00:00:00:0a"
        frame = fastdp.heartbeat_frame(macs[a.name], macs[b.name], name_a, 0.0, 14 + 1376)
        other = frame[:12] + b"\x08\x00" + frame[14:]          # not our ethertype: filtered in the kernel
        t0 = time.monotonic()
        for _ in range(5):
            sa.send(frame)
            sa.send(other)
        deadline = time.monotonic() + 5
        got: list[tuple[str, float]] = []
        while time.monotonic() < deadline and len(got) < 3:
            time.sleep(0.3)
            got = fastdp.drain(sb, 3)
        t1 = time.monotonic()
        assert [n for n, _ in got] == [name_a] * 3            # at most the limit
        assert all(t0 - 0.01 <= at <= t1 for _, at in got)    # arrival stamps, not the time of the read
        assert t1 - got[-1][1] >= 0.25                        # (read at least 0.3 s after they came)
        assert [n for n, _ in fastdp.drain(sb, 10)] == [name_a] * 2   # the rest, at the next read
        assert fastdp.drain(sb, 10) == [] and fastdp.drain(sa, 10) == []   # our own are never read back
        assert fastdp.queue_drops(sb) == 0
    finally:
        sa.close()
        sb.close()


def test_a_kept_iproute_is_shared_per_namespace_and_dropped_after_a_failure(make_ns):
    """The netlink thread keeps one IPRoute (keep_iproute); another namespace or a failure gets a fresh one."""
    from concurrent.futures import ThreadPoolExecutor

    from weavenet.net.links import iproute, keep_iproute
    from weavenet.net.netns import setns

    ns = make_ns("k")
    fd = os.open(ns.path, os.O_RDONLY)

    def body() -> list[bool]:
        with iproute() as a:
            pass
        with iproute() as b:
            ok = [a is b]
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        setns(fd)
        try:
            with iproute() as c:
                ok.append(c is not b and c.link("get", ifname="lo")[0]["index"] == 1)
        finally:
            setns(home)
            os.close(home)
        with pytest.raises(RuntimeError), iproute() as d:
            raise RuntimeError("boom")
        with iproute() as e:
            ok.append(e is not d)
        return ok

    try:
        with ThreadPoolExecutor(1, initializer=keep_iproute) as pool:
            assert pool.submit(body).result() == [True, True, True]
        with ThreadPoolExecutor(1) as pool:                  # not kept: one per call, as before
            def fresh() -> bool:
                with iproute() as a:
                    pass
                with iproute() as b:
                    return a is not b
            assert pool.submit(fresh).result()
    finally:
        os.close(fd)
