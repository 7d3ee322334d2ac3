"""The seed's walk-through with a real Docker engine: weave run across hosts, moving a container
between subnets, isolation and anti-spoofing, expose, restart and removal, router restart."""

import os

import pytest

from weavenet.lab.netns import NetnsLab

from .conftest import wait_for
from .dockerlab import (
    dexec,
    docker,
    dping,
    ethwe_cidrs,
    never_dping,
    ps_rows,
    remove_labelled,
    veth_ports,
    wait_dping,
)
from .helpers import full_mesh, launch_chain

SUBNET_A, SUBNET_B = "10.2.1", "10.2.2"


@pytest.fixture(scope="module")
def mesh(docker_image):
    lab = NetnsLab(3)
    label = f"weavenet-test={lab.prefix}"
    try:
        lab.create()
        names = launch_chain(lab.hosts)
        wait_for(lambda: full_mesh(lab.hosts, names), 20, what="full mesh")
        yield lab, docker_image, label
    finally:
        remove_labelled(label)
        lab.close()


def run(h, lab, label, image, name, *cidrs, extra=()):
    # --network none: only lo and ethwe inside, so every packet the tests see crossed the overlay.
    cname = f"{lab.prefix}-{name}"
    p = h.weave("run", *cidrs, "-t", "-i", "--name", cname, "--label", label, "--cap-add", "NET_ADMIN",
                "--network", "none", *extra, image)
    cid = p.stdout.strip()
    assert len(cid) == 64 and all(c in "0123456789abcdef" for c in cid), p.stdout
    return cname, cid


def test_seed_walkthrough(mesh):
    lab, image, label = mesh
    h1, h2, h3 = lab.hosts
    c1, id1 = run(h1, lab, label, image, "c1", f"{SUBNET_A}.1/24")
    c2, _ = run(h2, lab, label, image, "c2", f"{SUBNET_A}.2/24")
    c3, _ = run(h3, lab, label, image, "c3", f"{SUBNET_A}.3/24")

    # `ip addr` inside shows the address on ethwe; containers reach each other across hosts.
    assert ethwe_cidrs(c1) == [f"{SUBNET_A}.1/24"]
    wait_dping(c1, f"{SUBNET_A}.2")
    wait_dping(c1, f"{SUBNET_A}.3")
    wait_dping(c3, f"{SUBNET_A}.2")

    # weave ps: Weave's "ID MAC CIDR..." lines (what scripts parse); the table adds names.
    mac = dexec(c1, "cat", "/sys/class/net/ethwe/address").stdout.strip()
    assert f"{id1[:12]} {mac} {SUBNET_A}.1/24" in h1.weave("ps").stdout.splitlines()
    assert h1.weave("ps", c1).stdout == f"{id1[:12]} {mac} {SUBNET_A}.1/24\n"
    table = h1.weave("ps", "--format", "table").stdout
    assert f"{id1[:12]} " in table and c1 in table and mac in table

    # Application isolation: move c1 and c3 to subnet B without restarting them.
    for h, c, n in ((h1, c1, 1), (h3, c3, 3)):
        h.weave("detach", f"{SUBNET_A}.{n}/24", c)
        h.weave("attach", f"{SUBNET_B}.{n}/24", c)
        assert ethwe_cidrs(c) == [f"{SUBNET_B}.{n}/24"]
    wait_dping(c1, f"{SUBNET_B}.3")
    assert never_dping(c1, f"{SUBNET_A}.2", tries=1)  # no route: plain subnetting


def test_isolation_holds_against_routes_arp_and_spoofing(mesh):
    lab, image, label = mesh
    h1, h2, h3 = lab.hosts
    c4, _ = run(h1, lab, label, image, "c4", f"{SUBNET_B}.4/24")
    c5, _ = run(h2, lab, label, image, "c5", f"{SUBNET_A}.5/24")
    c6, _ = run(h2, lab, label, image, "c6", f"{SUBNET_B}.6/24")
    wait_dping(c4, f"{SUBNET_B}.6")       # same subnet, across hosts: fine

    # Both sides cooperate to bypass subnetting: routes to each other's subnet and static ARP.
    mac5 = dexec(c5, "cat", "/sys/class/net/ethwe/address").stdout.strip()
    mac4 = dexec(c4, "cat", "/sys/class/net/ethwe/address").stdout.strip()
    dexec(c4, "ip", "route", "add", f"{SUBNET_A}.0/24", "dev", "ethwe", check=True)
    dexec(c5, "ip", "route", "add", f"{SUBNET_B}.0/24", "dev", "ethwe", check=True)
    dexec(c4, "arp", "-i", "ethwe", "-s", f"{SUBNET_A}.5", mac5, check=True)
    dexec(c5, "arp", "-i", "ethwe", "-s", f"{SUBNET_B}.4", mac4, check=True)
    assert never_dping(c4, f"{SUBNET_A}.5")
    # Same host too (c6 and c5 share h2's bridge).
    dexec(c6, "ip", "route", "add", f"{SUBNET_A}.0/24", "dev", "ethwe", check=True)
    assert never_dping(c6, f"{SUBNET_A}.5", tries=2)

    # Anti-spoofing: c4 takes an address of subnet A it was not given, and sends from it.
    dexec(c4, "ip", "addr", "add", f"{SUBNET_A}.44/24", "dev", "ethwe", check=True)
    assert never_dping(c4, f"{SUBNET_A}.5", 2, "-I", f"{SUBNET_A}.44")
    dexec(c4, "ip", "addr", "del", f"{SUBNET_A}.44/24", "dev", "ethwe", check=True)

    # ... or a MAC it was not given: its frames are dropped until it takes its own back.
    dexec(c6, "ip", "link", "set", "ethwe", "address", "02:00:00:00:be:ef", check=True)
    dexec(c6, "ip", "neigh", "flush", "dev", "ethwe", check=True)
    assert never_dping(c6, f"{SUBNET_B}.4", tries=2)
    mac6 = next(r["mac"] for r in ps_rows(h2) if r["name"] == c6)
    dexec(c6, "ip", "link", "set", "ethwe", "address", mac6, check=True)
    wait_dping(c6, f"{SUBNET_B}.4")

    # The rules are the kernel's: one chain pair per container port on each host.
    table = h2.exec("nft", "list", "table", "bridge", "weavenet").stdout
    assert table.count("chain from_vethwepl") == len(ps_rows(h2)) >= 2 and mac5 in table


def test_expose_reaches_only_its_subnet(mesh):
    lab, image, label = mesh
    h1, h2, h3 = lab.hosts
    c7, _ = run(h2, lab, label, image, "c7", f"{SUBNET_A}.7/24")
    c8, _ = run(h3, lab, label, image, "c8", f"{SUBNET_B}.8/24")
    h1.weave("expose", f"{SUBNET_A}.254/24")
    try:
        deadline_ok = wait_for(lambda: h1.exec("ping", "-c1", "-W1", f"{SUBNET_A}.7", check=False).returncode == 0,
                               10, what="exposed host reaches its subnet on another host")
        assert deadline_ok
        assert f"{SUBNET_A}.254/24" in h1.weave("ps").stdout
        # A route by hand to subnet B (and c8 routing back) does not get the host in.
        h1.exec("ip", "route", "add", f"{SUBNET_B}.0/24", "dev", "weave")
        dexec(c8, "ip", "route", "add", f"{SUBNET_A}.0/24", "dev", "ethwe", check=True)
        assert all(h1.exec("ping", "-c1", "-W1", f"{SUBNET_B}.8", check=False).returncode != 0 for _ in range(2))
    finally:
        h1.exec("ip", "route", "del", f"{SUBNET_B}.0/24", "dev", "weave", check=False)
        h1.weave("hide", f"{SUBNET_A}.254/24")


def test_restart_keeps_address_and_rm_cleans_up(mesh):
    lab, image, label = mesh
    h1, h2, h3 = lab.hosts
    c9, id9 = run(h2, lab, label, image, "c9", f"{SUBNET_A}.9/24")
    c10, _ = run(h1, lab, label, image, "c10", f"{SUBNET_A}.10/24")
    wait_dping(c10, f"{SUBNET_A}.9")

    docker("restart", "-t", "1", c9)
    wait_for(lambda: ethwe_cidrs(c9) == [f"{SUBNET_A}.9/24"], 30, what="address back on ethwe after restart")
    wait_dping(c10, f"{SUBNET_A}.9")

    # A stopped container is listed as stopped; started again it comes back by itself.
    docker("stop", "-t", "1", c9)
    wait_for(lambda: any(r["id"] == id9 and not r["running"] for r in ps_rows(h2)), 10, what="marked stopped")
    docker("start", c9)
    wait_for(lambda: ethwe_cidrs(c9) == [f"{SUBNET_A}.9/24"], 10, what="address back after docker start")

    ports_before = len(veth_ports(h2))
    docker("rm", "-f", c9)
    wait_for(lambda: all(r["id"] != id9 for r in ps_rows(h2)), 10, what="record gone after docker rm")
    assert len(veth_ports(h2)) == ports_before - 1
    assert c9 not in h2.weave("ps").stdout


def test_router_restart_relearns_containers(mesh):
    lab, image, label = mesh
    h1, h2, h3 = lab.hosts
    c11, id11 = run(h3, lab, label, image, "c11", f"{SUBNET_A}.11/24")
    c12, _ = run(h1, lab, label, image, "c12", f"{SUBNET_A}.12/24")
    wait_dping(c12, f"{SUBNET_A}.11")
    mac_before = dexec(c11, "cat", "/sys/class/net/ethwe/address").stdout.strip()

    os.kill(h3.router_pid(), 9)
    # While the router is down a container is removed and another restarted: the new router catches up.
    docker("rm", "-f", c12)
    h3.weave("launch", "--nickname", "h3", h2.ip)
    wait_for(lambda: any(r["id"] == id11 and r["running"] for r in ps_rows(h3)), 10, what="c11 re-learned")
    # Its interface was left alone (same MAC), and it is reachable again through the new router.
    assert dexec(c11, "cat", "/sys/class/net/ethwe/address").stdout.strip() == mac_before
    c13, _ = run(h1, lab, label, image, "c13", f"{SUBNET_A}.13/24")
    wait_dping(c13, f"{SUBNET_A}.11", 15)
    assert "from_veth" in h3.exec("nft", "list", "table", "bridge", "weavenet").stdout


def test_bad_input(mesh):
    lab, image, label = mesh
    h1, h2, h3 = lab.hosts
    c20, _ = run(h1, lab, label, image, "c20", f"{SUBNET_A}.20/24")
    before = len(docker("ps", "-aq", "--filter", f"label={label}").stdout.split())
    ports = veth_ports(h1)

    def fails(*args, code=None, says=""):
        p = h1.weave(*args, check=False)
        assert p.returncode != 0 and (code is None or p.returncode == code), (args, p.returncode, p.stderr)
        err = p.stderr.strip()
        assert len(err.splitlines()) == 1 and says in err, (args, err)
        return err

    fails("run", "10.2.1.300/24", "--label", label, "--network", "none", image, code=2, says="10.2.1.300")  # usage
    fails("run", f"{SUBNET_A}.21/24", "--label", label, "--frobnicate", image, code=2, says="--frobnicate")
    fails("run", f"{SUBNET_A}.21/24", "--label", label, "--pull", "never", "weavenet/nosuch:1", says="not found")
    fails("run", f"{SUBNET_A}.20/24", "--label", label, "-ti", "--network", "none", image, says="already used")
    c21, _ = run(h1, lab, label, image, "c21", f"{SUBNET_A}.21/24")
    before += 1
    ports = veth_ports(h1)
    fails("attach", f"{SUBNET_A}.20/24", c21, says="already used")
    # An address held on another host is found by an ARP probe across the mesh.
    c22, _ = run(h3, lab, label, image, "c22", f"{SUBNET_A}.22/24")
    before += 1
    fails("attach", f"{SUBNET_A}.22/24", c21, says="already in use on the mesh")
    fails("run", f"{SUBNET_A}.22/24", "--label", label, "-ti", "--network", "none", image, says="in use on the mesh")
    fails("attach", f"{SUBNET_A}.20/24", "nosuch-container", says="no such container")
    fails("attach", "10.2.1.0/33", c20, says="10.2.1.0/33")
    fails("run", f"{SUBNET_A}.25/24", "--label", label, "--network", "none", image, "true", says="exited")
    other = docker("create", "--label", label, image).stdout.strip()
    fails("attach", f"{SUBNET_A}.23/24", other, says="not running")
    p = h1.weave("run", f"{SUBNET_A}.24/24", "--label", label, "-ti", "--network", "none", image, check=False,
                 env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert p.returncode == 1 and "cannot talk to Docker" in p.stderr and len(p.stderr.strip().splitlines()) == 1

    # Nothing half-done: no new containers but the one created by hand, no new veth, c20 untouched.
    after = docker("ps", "-aq", "--filter", f"label={label}").stdout.split()
    assert len(after) == before + 1
    assert veth_ports(h1) == ports
    assert ethwe_cidrs(c20) == [f"{SUBNET_A}.20/24"]
    assert dping(c20, f"{SUBNET_A}.20")
