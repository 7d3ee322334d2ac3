"""Verify the Molecule scenario's mesh (pytest-testinfra, one run per host)."""

import json

import pytest

WEAVE = "/opt/weavenet/venv/bin/weave"
PASSWORD = "molecule-secret"
# name -> (host, address, subnet), as declared in molecule.yml
CONTAINERS = {
    "web1": ("mol-host1", "10.0.0.1", "frontend"),
    "web2": ("mol-host2", "10.0.0.2", "frontend"),
    "db2": ("mol-host2", "10.10.0.2", "backend"),
    "web3": ("mol-host3", "10.0.0.3", "frontend"),
    "db3": ("mol-host3", "10.10.0.3", "backend"),
}
EXPOSED = ("mol-host1", "10.0.0.254", "frontend")


def report(host):
    return json.loads(host.check_output(f"{WEAVE} report"))["router"]


def hostname(host):
    return host.backend.get_hostname()


def ping(host, argv, dst, tries=3):
    for dummy in range(tries):
        if host.run(f"{argv} ping -c 1 -W 2 {dst}").rc == 0:
            return True
    return False


def test_router_installed_and_running(host):
    assert host.file(WEAVE).is_executable
    assert host.file("/opt/weavenet/wheelhouse").is_directory
    assert host.file("/opt/weavenet/wheelhouse.tar").is_file
    assert report(host)["name"]


def test_weave_on_path_after_login(host):
    # as the docs and every Weave tutorial use it: `weave status` in a login shell
    assert host.file("/usr/local/bin/weave").linked_to == WEAVE
    r = host.run("bash -lc 'command -v weave && weave status'")
    assert r.rc == 0, r.stderr
    assert r.stdout.splitlines()[0] == "/usr/local/bin/weave"
    assert "Peers:" in r.stdout or "Peers " in r.stdout, r.stdout


def test_router_runs_on_the_hosts_own_python(host):
    # mol-host3 is Debian 13 (Python 3.13), the others Debian 12 (3.11): wheels resolved per host
    want = "3.13" if hostname(host) == "mol-host3" else "3.11"
    venv_python = host.check_output("/opt/weavenet/venv/bin/python -c 'import sys; print(sys.version[:4])'")
    assert venv_python.strip() == want
    assert host.check_output("/opt/weavenet/venv/bin/python -c 'import nacl, aiohttp; print(1)'").strip() == "1"


def test_every_host_runs_the_sleeve_with_its_c_lane(host):
    # The controller (this machine, with the compiler scripts/bootstrap installs) built the lane once against
    # Python 3.11's stable ABI: the Debian 12 hosts (3.11) and the Debian 13 one (3.13) both load it.
    probe = "from weavenet.datapath import lane; print(lane.AVAILABLE, lane.WHY or '-')"
    assert host.check_output(f"/opt/weavenet/venv/bin/python -c {probe!r}").split()[0] == "True"


def test_routers_connected_to_each_other(host):
    r = report(host)
    established = [c for c in r["connections"] if c["state"] == "established"]
    assert len(established) == 2, r["connections"]
    assert {p["nickname"] for p in r["peers"]} == {"mol-host1", "mol-host2", "mol-host3"}


def test_encryption_on_and_password_not_shown(host):
    r = report(host)
    assert r["encryption"] is True
    assert all(c["encrypted"] for c in r["connections"] if c["state"] == "established")
    assert PASSWORD not in host.check_output("ps -eo args")
    assert PASSWORD not in json.dumps(r)


def test_containers_attached_with_their_addresses(host):
    r = report(host)
    mine = {n: v[1] for n, v in CONTAINERS.items() if v[0] == hostname(host)}
    attached = {c["name"].lstrip("/"): [x.split("/")[0] for x in c["cidrs"]] for c in r.get("containers", [])}
    for name, addr in mine.items():
        assert attached.get(name) == [addr], r.get("containers")


@pytest.mark.parametrize("src", sorted(CONTAINERS))
def test_containers_reach_their_subnet_across_hosts_and_nothing_else(host, src):
    src_host, dummy, src_net = CONTAINERS[src]
    if src_host != hostname(host):
        pytest.skip("container on another host")
    for dst, (dummy, addr, net) in sorted(CONTAINERS.items()):
        if dst == src:
            continue
        ok = ping(host, f"docker exec {src}", addr, tries=3 if net == src_net else 1)
        assert ok == (net == src_net), f"{src} -> {dst} ({addr}): {'reached' if ok else 'unreachable'}"


def test_declared_ports_env_and_restart_policy_applied(host):
    # web1 on mol-host1 is declared with ports 8080:80, env ROLE=web and restart_policy unless-stopped;
    # mol-host2 fetches the published port over the hosts' network
    if hostname(host) == "mol-host1":
        assert host.check_output("docker exec web1 /bin/sh -c 'echo \"$ROLE\"'") == "web"
        assert host.check_output("docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' web1") == "unless-stopped"
    elif hostname(host) == "mol-host2":
        for dummy in range(3):
            r = host.run("python3 -c \"import urllib.request as u; "
                         "print(u.urlopen('http://198.51.100.75:8080/', timeout=3).read().decode())\"")
            if r.rc == 0:
                break
        assert r.rc == 0 and "weavenet" in r.stdout, r.stderr
    else:
        pytest.skip("nothing declared with ports on this host")


def test_exposed_host_reaches_its_subnet_only(host):
    exp_host, exp_addr, exp_net = EXPOSED
    if hostname(host) != exp_host:
        assert not any(a.startswith(exp_addr) for a in report(host).get("exposed", []))
        return
    assert f"{exp_addr}/24" in report(host)["exposed"]
    for dst, (dummy, addr, net) in sorted(CONTAINERS.items()):
        ok = ping(host, "", f"-I {exp_addr} {addr}", tries=3 if net == exp_net else 1)
        assert ok == (net == exp_net), f"{exp_host}({exp_addr}) -> {dst} ({addr})"
