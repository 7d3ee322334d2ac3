"""The sleeve on an underlay that drops big packets (as Weave's PMTU test does): datagrams go out with DF,
cut to each connection's discovered path MTU, never relying on IP fragmentation; frames bigger than the
overlay MTU get ICMP "fragmentation needed" back (or are cut into IP fragments when DF is clear)."""

import re
import subprocess
import sys
import time

import pytest

from weavenet.lab.netns import sh

from .conftest import wait_for
from .helpers import full_mesh, launch_chain, report
from .overlay import container, ping, transfer, wait_ping

MODES = {"sleeve": ["--no-fastdp"], "encrypted": ["--password", "s3cret"]}


def drop_udp_above(lab, limit: int) -> None:
    """The lab switch drops every UDP packet (fragments too) whose IP length is above `limit`."""
    nft = f"""table bridge pmtu {{
  chain big {{
    type filter hook forward priority 0; policy accept;
    ip protocol udp ip length > {limit} drop
  }}
}}"""
    subprocess.run(["ip", "netns", "exec", lab.switch, "nft", "-f", "-"], input=nft, text=True, check=True)


NIC_LIKE = """
from pyroute2.ethtool import Ethtool
e = Ethtool()
f = e.get_features("eth0")
f.features["tx-udp-segmentation"].enable = False
e.set_features("eth0", f)
"""


def nic_like_underlay(lab) -> None:
    """The hosts' eth0 (veth) stop passing UDP GSO super-packets on whole: the kernel cuts them into their
    datagrams at eth0, as it does for a NIC without UDP segmentation offload (one with it does the same in
    hardware). A veth otherwise hands the switch namespace the uncut packet, where the length rule would see
    one packet of up to 64 KiB that no real wire carries."""
    for h in lab.hosts:
        subprocess.run(["ip", "netns", "exec", h.netns, sys.executable, "-c", NIC_LIKE], check=True)


def udp_reaches(lab, size: int) -> bool:
    """Does one UDP datagram of `size` IP bytes (DF-less: fragments if needed) get from h1 to h2?"""
    script = ("import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',5999));"
              "s.settimeout(2); print(len(s.recv(70000)))")
    rx = subprocess.Popen(["ip", "netns", "exec", lab.host(2).netns, "python3", "-c", script],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        send = (f"import socket,time; time.sleep(0.5); s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                f"s.sendto(bytes({size - 28}),('{lab.host(2).ip}',5999))")
        subprocess.run(["ip", "netns", "exec", lab.host(1).netns, "python3", "-c", send], check=True)
        out, _ = rx.communicate(timeout=5)
    finally:
        rx.kill()
    return out.strip() == str(size - 28)


def pmtus(h) -> dict:
    return {c["name"]: c.get("pmtu") for c in report(h)["connections"] if c["state"] == "established"}


@pytest.mark.parametrize("limit", [700, 1300])
@pytest.mark.parametrize("mode", MODES)
def test_large_ping_and_bulk_tcp_over_a_small_underlay_mtu(lab_factory, mode, limit):
    lab = lab_factory(2)
    nic_like_underlay(lab)
    drop_udp_above(lab, limit)
    assert udp_reaches(lab, limit) and not udp_reaches(lab, limit + 1), "the underlay rule does not bite"
    h1, h2 = lab.hosts
    names = launch_chain(lab.hosts, *MODES[mode])
    wait_for(lambda: full_mesh(lab.hosts, names), 15, what="mesh")
    # Each side discovers the path MTU: at most the limit, and close to it (the search stops within 8 bytes).
    for h, peer in ((h1, names[1]), (h2, names[0])):
        seen = []
        deadline = time.monotonic() + 20
        while not (seen and seen[-1] and limit - 8 <= seen[-1] <= limit) and time.monotonic() < deadline:
            time.sleep(0.2)
            seen.append(pmtus(h).get(peer))
        assert seen[-1] and limit - 8 <= seen[-1] <= limit, f"path MTU about {limit}: saw {seen[::5]}"
    # The status shows it (a periodic re-check may have settled a few bytes apart since: same window).
    status = h1.weave("status", "connections").stdout
    shown = re.search(r"pmtu=(\d+)\b", status)
    assert shown and limit - 8 <= int(shown.group(1)) <= limit, status
    c1 = container(lab, h1, "c1", "10.0.0.1/24")
    c2 = container(lab, h2, "c2", "10.0.0.2/24")
    wait_ping(c1, "10.0.0.2")
    assert ping(c1, "10.0.0.2", count=3, size=10000, wait=2)
    sent, received = transfer(c1, c2, "10.0.0.2", size=32 << 20)
    assert sent == received and sent[0] == 32 << 20
    sent, received = transfer(c2, c1, "10.0.0.1", size=4 << 20, seed=3)
    assert sent == received


def test_frame_bigger_than_the_overlay_mtu_gets_icmp_or_is_fragmented(lab_factory):
    lab = lab_factory(2)
    names = launch_chain(lab.hosts, "--no-fastdp")
    wait_for(lambda: full_mesh(lab.hosts, names), 15, what="mesh")
    c1 = container(lab, lab.host(1), "c1", "10.0.0.1/24")
    container(lab, lab.host(2), "c2", "10.0.0.2/24")
    wait_ping(c1, "10.0.0.2")
    # c1 gets a bigger MTU than the overlay's 1376 (its veth's both ends: a veth drops what its peer cannot take).
    sh("ip", "link", "set", "ethwe", "mtu", "9000", netns=c1)
    h1 = lab.host(1).netns
    for line in sh("ip", "-o", "link", "show", "master", "weave", netns=h1).stdout.splitlines():
        port = line.split(":")[1].strip().split("@")[0]
        if port != "weave-tap":
            sh("ip", "link", "set", port, "mtu", "9000", netns=h1)
    # DF set: the router answers "fragmentation needed" with the overlay MTU; the sender's kernel learns it.
    p = sh("ping", "-c", "2", "-W", "2", "-M", "do", "-s", "3000", "10.0.0.2", netns=c1, check=False)
    assert p.returncode != 0
    assert "mtu = 1376" in p.stdout or "mtu=1376" in p.stdout, p.stdout + p.stderr
    assert "mtu 1376" in sh("ip", "route", "get", "10.0.0.2", netns=c1).stdout
    sh("ip", "route", "flush", "cache", netns=c1)
    # DF clear: the router cuts the packet into IP fragments that fit; the receiver puts them together.
    p = sh("ping", "-c", "2", "-W", "2", "-M", "dont", "-s", "5000", "10.0.0.2", netns=c1, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    drops = report(lab.host(1))["dataplane"]["drops"]
    assert drops.get("frag_needed", 0) >= 1 and drops.get("fragmented", 0) >= 1, drops


def test_fast_path_over_a_small_underlay_mtu_falls_back_to_the_sleeve(lab_factory):
    # Full-size fast-path heartbeats do not get through: the connection stays on the sleeve, which copes.
    lab = lab_factory(2)
    nic_like_underlay(lab)
    drop_udp_above(lab, 700)
    names = launch_chain(lab.hosts)
    wait_for(lambda: full_mesh(lab.hosts, names), 15, what="mesh")
    c1 = container(lab, lab.host(1), "c1", "10.0.0.1/24")
    c2 = container(lab, lab.host(2), "c2", "10.0.0.2/24")
    wait_ping(c1, "10.0.0.2", timeout=20)
    assert ping(c1, "10.0.0.2", count=3, size=10000, wait=2)
    sent, received = transfer(c1, c2, "10.0.0.2", size=4 << 20)
    assert sent == received
    conn = next(c for c in report(lab.host(1))["connections"] if c["state"] == "established")
    assert conn["datapath"] == "sleeve" and conn["mtu"] == 1376, conn
