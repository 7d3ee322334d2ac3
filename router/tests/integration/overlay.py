"""Helpers for data-plane tests: containers as namespaces, ping and checked TCP transfers."""

import subprocess
import time

from weavenet.lab.netns import Host, NetnsLab, sh

SERVER = """
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); s.settimeout(60)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    h.update(d); n += len(d)
print(n, h.hexdigest())
"""

CLIENT = """
import hashlib, random, socket, sys, time
data = random.Random(int(sys.argv[3])).randbytes(int(sys.argv[2]))
marker = sys.argv[4].encode() if len(sys.argv) > 4 else b""
if marker:
    data = (marker * (len(data) // len(marker) + 1))[:len(data)]
for i in range(50):
    try:
        s = socket.create_connection((sys.argv[1], 5001), timeout=5); break
    except OSError:
        time.sleep(0.1)
s.settimeout(60); s.sendall(data); s.close()
print(len(data), hashlib.sha256(data).hexdigest())
"""


def container(lab: NetnsLab, host: Host, name: str, cidr: str) -> str:
    ns = lab.add_container(host, name)
    host.weave("attach", cidr, f"netns:{ns}")
    return ns


def ping(ns: str, ip: str, count: int = 1, size: int = 56, wait: float = 1) -> bool:
    p = sh("ping", "-c", str(count), "-W", str(wait), "-s", str(size), ip, netns=ns, check=False)
    return p.returncode == 0


def wait_ping(ns: str, ip: str, timeout: float = 10) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ping(ns, ip, wait=0.5):
            return time.monotonic() - t0
    raise AssertionError(f"{ip} not reachable from {ns} within {timeout}s")


def transfer(src_ns: str, dst_ns: str, dst_ip: str, size: int = 4 << 20, seed: int = 7, marker: str = "") -> tuple:
    """Send `size` bytes over TCP; return (sent, received) as (length, sha256) pairs."""
    server = subprocess.Popen(["ip", "netns", "exec", dst_ns, "python3", "-c", SERVER],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        args = ["ip", "netns", "exec", src_ns, "python3", "-c", CLIENT, dst_ip, str(size), str(seed)]
        client = subprocess.run(args + ([marker] if marker else []), capture_output=True, text=True, timeout=90)
        out, err = server.communicate(timeout=90)
    finally:
        server.kill()
    assert client.returncode == 0, client.stderr
    sent = client.stdout.split()
    received = out.split()
    return (int(sent[0]), sent[1]), (int(received[0]), received[1]) if received else (0, "")
