"""IPAM and weaveDNS across a real mesh with Docker: automatic addresses on every host of a chain,
router restart, rmpeer; names resolved from containers across hosts, removal, forwarding upstream."""

import ipaddress
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from weavenet.lab.netns import NetnsLab

from .conftest import wait_for
from .dockerlab import dexec, docker, ethwe_cidrs, remove_labelled
from .helpers import full_mesh, launch_chain, report

RANGE = ipaddress.IPv4Network("10.32.0.0/12")

# A stand-in for the host's upstream resolver, in its own namespace on the underlay.
RESOLVER = """
import socket, dns.message, dns.rrset, dns.rcode
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
while True:
    data, addr = s.recvfrom(4096)
    q = dns.message.from_wire(data); r = dns.message.make_response(q)
    if str(q.question[0].name) == "upstream.test.":
        r.answer.append(dns.rrset.from_text("upstream.test.", 30, "IN", "A", "192.0.2.99"))
    else:
        r.set_rcode(dns.rcode.NXDOMAIN)
    s.sendto(r.to_wire(), addr)
"""


@pytest.fixture(scope="module")
def mesh(docker_image):
    lab = NetnsLab(4)   # h4 is not a weave host: it runs the upstream resolver
    label = f"weavenet-test={lab.prefix}"
    resolver = None
    try:
        lab.create()
        h4 = lab.host(4)
        resolver = subprocess.Popen(["ip", "netns", "exec", h4.netns, sys.executable, "-c", RESOLVER])
        hosts = lab.hosts[:3]
        names = launch_chain(hosts, "--dns-upstream", h4.ip)
        wait_for(lambda: full_mesh(hosts, names), 20, what="full mesh")
        yield lab, hosts, names, docker_image, label
    finally:
        if resolver is not None:
            resolver.kill()
            resolver.wait()
        remove_labelled(label)
        lab.close()


def run(h, lab, label, image, name, *specs):
    p = h.weave("run", *specs, "-ti", "--name", f"{lab.prefix}-{name}", "--label", label, "--network", "none",
                image, timeout=90)
    return f"{lab.prefix}-{name}", p.stdout.strip()


def nslookup(container: str, name: str) -> list[str]:
    """Addresses busybox nslookup prints for `name` ([] for NXDOMAIN and the like)."""
    out = dexec(container, "nslookup", name).stdout   # asks A and AAAA: an answer section for each
    answers = out.split("Name:", 1)[1] if "Name:" in out else ""
    return sorted({line.split()[-1] for line in answers.splitlines() if line.startswith("Address")})


def test_names_resolve_across_hosts_and_go_away(mesh):
    lab, (h1, h2, h3), names, image, label = mesh
    a, _ = run(h1, lab, label, image, "dns-a")
    c, cid = run(h3, lab, label, image, "dns-c")
    ip_c = ethwe_cidrs(c)[0].split("/")[0]
    # A container on h1 resolves a name registered on h3, via its own host's weaveDNS.
    wait_for(lambda: nslookup(a, f"{c}.weave.local") == [ip_c], 10, what="name resolved across hosts")
    assert dexec(a, "ping", "-c1", "-W1", c).returncode == 0           # the search domain works too
    assert f"{c}.weave.local." in h1.weave("status", "dns").stdout and ip_c in h1.weave("status", "dns").stdout
    ptr = dexec(a, "nslookup", ip_c).stdout
    assert f"{c}.weave.local" in ptr

    # Two containers under one name: both addresses come back.
    b, _ = run(h2, lab, label, image, "dns-b")
    ip_b = ethwe_cidrs(b)[0].split("/")[0]
    h2.weave("dns-add", b, "-h", "shared.weave.local")
    h3.weave("dns-add", ip_c, c, "-h", "shared.weave.local")
    wait_for(lambda: nslookup(a, "shared.weave.local") == sorted([ip_b, ip_c]), 10, what="both addresses")
    assert sorted(h1.weave("dns-lookup", "shared").stdout.split()) == sorted([ip_b, ip_c])

    # dns-remove and container removal propagate to the other hosts.
    h2.weave("dns-remove", b, "-h", "shared.weave.local")
    wait_for(lambda: nslookup(a, "shared.weave.local") == [ip_c], 10, what="dns-remove propagated")
    docker("rm", "-f", c)
    wait_for(lambda: nslookup(a, f"{c}.weave.local") == [] and nslookup(a, "shared.weave.local") == [],
             10, what="names of a removed container gone")
    assert h1.weave("dns-lookup", c, check=False).returncode == 1
    assert cid not in h3.weave("ps").stdout


def test_other_names_are_forwarded_upstream(mesh):
    lab, (h1, h2, h3), names, image, label = mesh
    a, _ = run(h2, lab, label, image, "dns-up")
    wait_for(lambda: nslookup(a, "upstream.test") == ["192.0.2.99"], 10, what="forwarded answer")
    assert nslookup(a, "nosuch.weave.local") == []   # our domain: NXDOMAIN from us, not forwarded
    assert report(h2)["dns"]["forwarded"] >= 1


def test_concurrent_allocations_on_a_chain_are_distinct(mesh):
    lab, hosts, names, image, label = mesh

    def one(args):
        h, i = args
        return run(h, lab, label, image, f"ipam-{h.index}-{i}")[0]

    with ThreadPoolExecutor(12) as pool:
        containers = list(pool.map(one, [(h, i) for h in hosts for i in range(20)]))
    addrs = {c: ethwe_cidrs(c) for c in containers}
    ips = [ipaddress.ip_interface(v[0]) for v in addrs.values()]
    assert all(len(v) == 1 for v in addrs.values())
    assert len({i.ip for i in ips}) == 60 and all(i.ip in RANGE and i.network == RANGE for i in ips)
    # Every host allocated from space of its own: the ring has all three routers in it.
    status = {p["peer"] for p in report(hosts[0])["ipam"]["peers"]}
    assert status == set(names)
    assert len(hosts[0].weave("status", "ipam").stdout.strip().splitlines()) == 3

    # kill -9 and restart a router: its containers keep their addresses, new ones don't collide.
    h2 = hosts[1]
    mine = {c: addrs[c] for c in containers if "ipam-2-" in c}
    os.kill(h2.router_pid(), signal.SIGKILL)
    h2.weave("launch", "--nickname", "h2", "--dns-upstream", lab.host(4).ip, hosts[0].ip)
    wait_for(lambda: len(report(h2)["containers"]) >= 20, 15, what="containers re-learnt")
    assert {c: ethwe_cidrs(c) for c in mine} == mine
    fresh = [run(h2, lab, label, image, f"ipam-after-{i}")[0] for i in range(3)]
    new_ips = {ipaddress.ip_interface(ethwe_cidrs(c)[0]).ip for c in fresh}
    assert len(new_ips) == 3 and not new_ips & {i.ip for i in ips}


def test_rmpeer_hands_space_of_a_removed_host_to_the_caller(mesh):
    lab, (h1, h2, h3), names, image, label = mesh
    for c in docker("ps", "-aq", "--filter", f"label={label}").stdout.split():
        if f"{lab.prefix}-ipam-3-" in docker("inspect", "-f", "{{.Name}}", c).stdout:
            docker("rm", "-f", c)
    before = {p["peer"]: p["addresses"] for p in report(h1)["ipam"]["peers"]}
    assert h1.weave("rmpeer", names[2], check=False).returncode != 0   # still connected: refused
    h3.weave("stop")
    wait_for(lambda: names[2] not in {p["name"] for p in report(h1)["peers"]}, 10, what="h3 gone")
    out = h1.weave("rmpeer", names[2]).stdout
    assert out.split()[0] == str(before[names[2]])
    after = {p["peer"]: p["addresses"] for p in report(h1)["ipam"]["peers"]}
    assert names[2] not in after and after[names[0]] == before[names[0]] + before[names[2]]
    # Not twice: neither here nor on another router that has heard of it.
    again = h1.weave("rmpeer", names[2], check=False)
    assert again.returncode == 1 and "already removed" in again.stderr
    wait_for(lambda: names[2] not in {p["peer"] for p in report(h2)["ipam"]["peers"]}, 10, what="gossiped")
    assert h2.weave("rmpeer", names[2], check=False).returncode == 1


def test_bad_input(mesh):
    lab, (h1, h2, h3), names, image, label = mesh

    def fails(h, *args, says):
        p = h.weave(*args, check=False)
        err = p.stderr.strip()
        assert p.returncode != 0 and len(err.splitlines()) == 1 and says in err, (args, p.returncode, err)

    n_before = len(docker("ps", "-aq", "--filter", f"label={label}").stdout.split())
    fails(h1, "run", "net:10.32.0.0/33", "--label", label, image, says="net:10.32.0.0/33")
    fails(h1, "run", "net:bogus", "--label", label, image, says="net:bogus")
    fails(h1, "run", "net:10.99.0.0/16", "--label", label, "-ti", "--network", "none", image,
          says="not inside")
    assert len(docker("ps", "-aq", "--filter", f"label={label}").stdout.split()) == n_before
    a, _ = run(h1, lab, label, image, "bad-a")
    fails(h1, "dns-add", "192.0.2.77", a, says="not a weave address")
    fails(h1, "dns-add", a, "-h", "x.example.com", says="weave.local")
    # A range overlapping a route of the host is refused before anything starts.
    h4 = lab.host(4)
    h4.exec("ip", "route", "add", "10.40.0.0/16", "dev", "eth0")
    fails(h4, "launch", says="overlaps the host route 10.40.0.0/16")
    assert h4.router_pid() is None
    fails(h4, "launch", "--ipalloc-range", "10.0.0.0/8", says="overlaps")
    fails(h4, "launch", "--ipalloc-range", "10.64.0.0/12", "--ipalloc-default-subnet", "10.1.0.0/16",
          says="not inside")
    # A router keeps its space: relaunching it with another range is refused until `weave reset`.
    h4.weave("launch", "--ipalloc-range", "10.96.0.0/12")
    c, _ = run(h4, lab, label, image, "bad-seed")     # alone: it claims the range, which is persisted
    assert ethwe_cidrs(c)[0].startswith("10.96.")
    docker("rm", "-f", c)
    h4.weave("stop")
    fails(h4, "launch", "--ipalloc-range", "10.112.0.0/12", says="weave reset")
    assert h4.router_pid() is None
    h4.weave("reset")
    h4.weave("launch", "--ipalloc-range", "10.112.0.0/12")
    h4.weave("stop")
