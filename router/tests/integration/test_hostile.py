"""A hostile host on the underlay: garbage and forged datagrams to 6783/6784, forged VXLAN frames, a
flood of pre-auth TCP connections and cross-site calls to the local API — while two members keep
pinging each other over the overlay and a third member joins during the flood."""

import json
import random
import struct
import subprocess
import time

import pytest

from weavenet.datapath.icmp import checksum

from .conftest import wait_for
from .helpers import full_mesh, launch_chain, report
from .overlay import container, wait_ping

MODES = {"plain": [], "encrypted": ["--password", "s3cret"]}

ATTACKER = r"""
import random, socket, sys, time
target, frames_hex, seconds = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
frames = [bytes.fromhex(h) for h in frames_hex]
rng = random.Random(1)
# Hold many pre-auth TCP connections open (send nothing, or a few bytes of junk).
held = []
for i in range(300):
    try:
        s = socket.create_connection((target, 6783), timeout=1)
        if i % 3 == 0:
            s.send(rng.randbytes(rng.randrange(1, 64)))
        held.append(s)
    except OSError:
        pass
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for port in (6783, 6784):
        for f in frames:
            udp.sendto(f, (target, port))
        udp.sendto(rng.randbytes(rng.randrange(0, 1500)), (target, port))
        sent += len(frames) + 1
    time.sleep(0.002)
print(len(held), sent)
"""


def udp_frame(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str, dport: int, payload: bytes) -> bytes:
    """An Ethernet + IPv4 + UDP frame (UDP checksum 0: allowed over IPv4)."""
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     bytes(map(int, src_ip.split("."))), bytes(map(int, dst_ip.split("."))))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    mac = lambda m: bytes.fromhex(m.replace(":", ""))  # noqa: E731
    return mac(dst_mac) + mac(src_mac) + b"\x08\x00" + ip + udp


def sleeve_datagram(sender: str, origin: str, frame: bytes, encrypted: bool, seq: int) -> bytes:
    """A sleeve datagram as a peer would send it (plaintext body; with the encrypted flag the body is
    just bytes that cannot authenticate)."""
    name = bytes.fromhex(sender.replace(":", ""))
    head = struct.pack(">BB6sQ", 0x57, 1 if encrypted else 0, name, seq)
    body = struct.pack(">6s6sB", bytes.fromhex(origin.replace(":", "")), b"\xff" * 6, 0)
    body += struct.pack(">I", 10 + len(frame)) + b"\0" * 10 + frame
    return head + (body + b"\0" * 16 if encrypted else body)


def vxlan_packet(vni: int, frame: bytes) -> bytes:
    return struct.pack("!II", 0x08000000, vni << 8) + frame


def canary(ns: str, port: int) -> None:
    """An nft counter in the container for UDP to `port`: counts what reaches the container."""
    rules = (f"table inet canary {{\n chain input {{\n  type filter hook input priority 0;\n"
             f"  udp dport {port} counter\n }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True)


def canary_count(ns: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "canary"],
                         capture_output=True, text=True, check=True).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for expr in rule["expr"]:
                if "counter" in expr:
                    return expr["counter"]["packets"]
    raise AssertionError("no canary counter")


def send_udp(ns: str, ip: str, port: int, count: int = 3) -> None:
    code = (f"import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for _ in range({count}):\n    s.sendto(b'hello',('{ip}',{port})); time.sleep(0.05)")
    subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code], check=True)


def mac_of(ns: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/sys/class/net/ethwe/address"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def api_request(h, method: str, path: str, body: str, headers: dict) -> int:
    """A request to the member's API as a web page or a local process without the token would send it."""
    code = ("import http.client,json,sys\n"
            "c=http.client.HTTPConnection('127.0.0.1',6784,timeout=5)\n"
            "c.request(sys.argv[1],sys.argv[2],body=sys.argv[3].encode(),headers=json.loads(sys.argv[4]))\n"
            "print(c.getresponse().status)")
    out = h.exec("python3", "-c", code, method, path, body, json.dumps(headers))
    return int(out.stdout.strip())


@pytest.mark.parametrize("mode", MODES)
def test_members_keep_working_under_a_hostile_host(lab_factory, mode):
    lab = lab_factory(4)
    h1, h2, attacker, late = lab.hosts
    names = launch_chain([h1, h2], *MODES[mode])
    wait_for(lambda: full_mesh([h1, h2], names), 15, what="mesh")
    c1 = container(lab, h1, "c1", "10.0.0.1/24")
    c2 = container(lab, h2, "c2", "10.0.0.2/24")
    wait_ping(c1, "10.0.0.2")
    canary(c1, 9999)
    c1_mac, c2_mac = mac_of(c1), mac_of(c2)

    # Positive control: the counter sees real overlay traffic from c2.
    send_udp(c2, "10.0.0.1", 9999)
    wait_for(lambda: canary_count(c1) >= 3, 5, what="canary counts real traffic")
    before = canary_count(c1)

    # Forged frames for c1 that claim to come from h2 (and from c2's MAC, to try a hijack).
    forged = udp_frame(c1_mac, c2_mac, "10.0.0.2", "10.0.0.1", 9999, b"forged")
    frames = [sleeve_datagram(names[1], names[1], forged, mode == "encrypted", seq)
              for seq in (1, 2, 1 << 40)]
    frames.append(sleeve_datagram(names[1], names[1], forged, True, 7)[:30])  # the 30-byte killer
    frames.append(vxlan_packet(6784, forged))
    frames.append(vxlan_packet(random.Random(2).randrange(1 << 24), forged))

    ping = subprocess.Popen(["ip", "netns", "exec", c1, "ping", "-i", "0.2", "-c", "75", "-W", "1", "10.0.0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    flood = subprocess.Popen(["ip", "netns", "exec", attacker.netns, "python3", "-c", ATTACKER, h1.ip,
                              ",".join(f.hex() for f in frames), "12"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)  # the flood is on: a new member must still get in
        late_name = late.weave("launch", "--nickname", "late", *MODES[mode], h1.ip).stdout.strip()
        wait_for(lambda: full_mesh([h1, h2, late], [*names, late_name]), 30, what="late member joins during flood")

        # Cross-site and unauthenticated calls to h1's API change nothing.
        targets = report(h1)["targets"]
        evil = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
        assert api_request(h1, "POST", "/connect", json.dumps({"peers": [attacker.ip]}), evil) >= 400
        assert api_request(h1, "POST", "/attach", json.dumps({"target": "pid:1", "cidrs": ["10.0.0.9/24"]}),
                           {"Content-Type": "application/json"}) >= 400
        assert api_request(h1, "POST", "/connect", json.dumps({"peers": [attacker.ip]}),
                           {"Content-Type": "application/json", "Host": "rebind.evil.example:6784"}) >= 400
        assert report(h1)["targets"] == targets
        out, err = flood.communicate(timeout=60)
        assert flood.returncode == 0, err
    finally:
        flood.kill()
        ping_out = ping.communicate(timeout=60)[0]

    # Members kept talking throughout; nothing forged reached the container.
    stats = next(ln for ln in ping_out.splitlines() if "packets transmitted" in ln)
    transmitted, received = (int(stats.split()[i]) for i in (0, 3))
    assert received >= 0.9 * transmitted, stats
    assert canary_count(c1) == before, "a forged frame reached the container"
    # Both members' routers are alive, their data path healthy, and the drops were counted.
    for h in (h1, h2):
        r = report(h)
        assert r["dataplane"]["health"] == "healthy", r["dataplane"]
    metrics = h1.exec("python3", "-c", "import urllib.request;print(urllib.request.urlopen("
                      "'http://127.0.0.1:6784/metrics',timeout=5).read().decode())").stdout
    dropped = sum(float(ln.split()[-1]) for ln in metrics.splitlines()
                  if ln.startswith("weave_dropped_frames_total{"))
    assert dropped > 0, "the garbage was not counted"
    send_udp(c2, "10.0.0.1", 9999)
    wait_for(lambda: canary_count(c1) >= before + 3, 5, what="overlay still delivers")
    wait_ping(c1, "10.0.0.2")
