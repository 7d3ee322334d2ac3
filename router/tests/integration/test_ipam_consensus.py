"""--ipalloc-init consensus=N with real routers in namespaces: every router given every other one as peer
(all mode) and launched at once, and a chain whose first host starts last. Each then allocates."""

import ipaddress
from concurrent.futures import ThreadPoolExecutor

from .conftest import wait_for
from .helpers import full_mesh, report

RANGE = ipaddress.IPv4Network("10.32.0.0/12")


def allocate_on_each(lab, hosts) -> dict[str, str]:
    """`weave attach netns:NS` with no address on every host at once: the default subnet, from IPAM."""
    spaces = [lab.add_container(h, f"ipam{h.index}") for h in hosts]
    with ThreadPoolExecutor(len(hosts)) as pool:
        out = list(pool.map(lambda hn: hn[0].weave("attach", f"netns:{hn[1]}", timeout=60).stdout.strip(),
                            zip(hosts, spaces, strict=True)))
    return {h.ip: a for h, a in zip(hosts, out, strict=True)}


def check_one_ring(hosts, addrs: dict[str, str]) -> None:
    ips = [ipaddress.IPv4Address(a) for a in addrs.values()]
    assert len(set(ips)) == len(ips) and all(ip in RANGE for ip in ips), addrs
    ipam = [report(h)["ipam"] for h in hosts]
    assert len({r["ring"] for r in ipam}) == 1 and ipam[0]["ring"] is not None
    assert all(r["consensus"] == {"state": "achieved"} for r in ipam)


def test_all_mode_launched_at_once(lab_factory):
    lab = lab_factory(3)
    hosts = lab.hosts

    def launch(h):
        others = [o.ip for o in hosts if o is not h]
        return h.weave("launch", "--nickname", f"h{h.index}", "--ipalloc-init", "consensus=3", *others).stdout.strip()

    with ThreadPoolExecutor(3) as pool:
        names = list(pool.map(launch, hosts))
    addrs = allocate_on_each(lab, hosts)   # (possibly before the mesh is complete: the agreement waits for it)
    wait_for(lambda: full_mesh(hosts, names), 20, what="full mesh")
    check_one_ring(hosts, addrs)
    assert "consensus=3" in report(hosts[0])["ipam"]["init"]


def test_chain_whose_first_host_starts_last(lab_factory):
    lab = lab_factory(3)
    h1, h2, h3 = lab.hosts
    init = ("--ipalloc-init", "consensus=3")
    h2.weave("launch", "--nickname", "h2", *init, h1.ip)            # its only peer is down
    h3.weave("launch", "--nickname", "h3", *init, h1.ip, h2.ip)
    addrs = allocate_on_each(lab, [h2, h3])                         # 2 of 3: a quorum
    h1.weave("launch", "--nickname", "h1", *init)                   # no peers: it must adopt their ring
    names = [report(h)["name"] for h in (h1, h2, h3)]
    wait_for(lambda: full_mesh(lab.hosts, names), 30, what="full mesh")
    addrs.update(allocate_on_each(lab, [h1]))
    check_one_ring(lab.hosts, addrs)
    assert "cannot be merged" not in (h1.rundir / "weave.log").read_text()
