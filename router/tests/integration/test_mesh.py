"""Routers in network namespaces over a real veth/bridge underlay."""

import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path

from .conftest import wait_for
from .helpers import established_peers, full_mesh, launch_chain, log_text, peer_names, report


def test_chain_of_five_becomes_full_mesh_and_kill_is_noticed(lab_factory):
    lab = lab_factory(5)
    hosts = lab.hosts
    names = launch_chain(hosts)
    assert len(set(names)) == 5
    wait_for(lambda: full_mesh(hosts, names), 20, what="full mesh")
    # Routes: every destination is a direct next hop in a full mesh.
    r = report(hosts[0])
    assert {u["dest"]: u["via"] for u in r["routes"]["unicast"]} == {n: n for n in names[1:]}

    victim = hosts[2]
    killed = time.time()
    os.kill(victim.router_pid(), signal.SIGKILL)
    others = [h for h in hosts if h is not victim]
    # Measured by the routers' own log stamps: polling `weave report` (a CLI start per host) adds seconds.
    wait_for(lambda: all(names[2] not in peer_names(h) for h in others), 8, 0.05, "victim dropped")
    for h in others:
        lost = _lost_at(h, names[2], "", killed)
        assert lost is not None and lost - killed <= 3.0, (h.index, lost and lost - killed)
    wait_for(lambda: full_mesh(others, [n for n in names if n != names[2]]), 5, what="mesh of four")


def _lost_at(h, peer: str, reason: str, after: float) -> float | None:
    """Wall-clock time of the router's own first "connection ... lost: <reason>" log line for ``peer``
    stamped at or after ``after`` (the log's stamps have milliseconds; the lab shares this clock)."""
    for line in log_text(h).splitlines():
        if f"{peer}(" in line and " lost: " in line and reason in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if stamp >= after - 0.001:
                return stamp
    return None


def test_silently_cut_peer_detected_within_3s(lab_factory):
    lab = lab_factory(3)
    names = launch_chain(lab.hosts)
    wait_for(lambda: full_mesh(lab.hosts, names), 15, what="full mesh")
    victim = lab.host(3)
    cut = time.time()
    victim.exec("ip", "link", "set", "eth0", "down")  # unplugged: no FIN, no RST
    # Each `weave report` is a CLI start (~0.3 s per host here), so polling reports would add up to a second
    # to what is measured; the routers' own log stamps say when they gave the peer up.
    wait_for(lambda: all(names[2] not in peer_names(h) for h in lab.hosts[:2]), 6, 0.05, "cut peer dropped")
    for h in lab.hosts[:2]:
        # Unplugged: the kernel gives the connection up (TCP_USER_TIMEOUT: nothing acknowledged), or the
        # router (heartbeat silence), whichever comes first.
        lost = _lost_at(h, names[2], "timed out", cut) or _lost_at(h, names[2], "no heartbeat", cut)
        assert lost is not None, log_text(h)[-2000:]
        assert lost - cut <= 3.0, (h.index, lost - cut)
    # Plugged back in: the connection maker brings it back.
    victim.exec("ip", "link", "set", "eth0", "up")
    wait_for(lambda: full_mesh(lab.hosts, names), 20, what="mesh restored")


def test_wrong_password_is_refused_on_both_sides(lab_factory):
    lab = lab_factory(2)
    a, b = lab.hosts
    a.weave("launch", "--password", "correct horse")
    b.weave("launch", a.ip, env={"WEAVE_PASSWORD": "battery staple"})

    def failed_on_both():
        ca = [c for c in report(a)["connections"] if c["state"] == "failed"]
        cb = [c for c in report(b)["connections"] if c["state"] == "failed"]
        return ca and cb

    wait_for(failed_on_both, 10, what="failed connection on both sides")
    assert report(a)["encryption"] and report(b)["encryption"]
    assert "password differs" in b.weave("status", "connections").stdout
    for h in (a, b):
        text = log_text(h)
        assert "password differs" in text
        assert "correct horse" not in text and "battery staple" not in text
        assert len(peer_names(h)) == 1
    # And no password at all against an encrypted peer: refused too, with the reason.
    c = lab.add_host(3)
    c.weave("launch", a.ip)
    wait_for(lambda: "encryption mismatch" in c.weave("status", "connections").stdout, 10, what="mismatch")


def test_encrypted_mesh_connects(lab_factory):
    lab = lab_factory(3)
    names = launch_chain(lab.hosts, "--password", "s3cret")
    wait_for(lambda: full_mesh(lab.hosts, names), 20, what="encrypted full mesh")
    assert all(c["encrypted"] for c in report(lab.host(1))["connections"])
    assert "Encryption: enabled" in lab.host(1).weave("status").stdout
    # The password is not in the router's command line either.
    cmdline = Path(f"/proc/{lab.host(1).router_pid()}/cmdline").read_bytes()
    assert b"s3cret" not in cmdline


def test_connect_forget_and_targets(lab_factory):
    lab = lab_factory(3)
    a, b, c = lab.hosts
    for h in lab.hosts:
        h.weave("launch", "--no-discovery")
    a.weave("connect", b.ip)
    wait_for(lambda: len(established_peers(a)) == 1, 10, what="a-b")
    assert a.weave("status", "targets").stdout.split() == [f"{b.ip}:6783"]
    a.weave("connect", "--replace", c.ip)
    assert a.weave("status", "targets").stdout.split() == [f"{c.ip}:6783"]
    wait_for(lambda: len(established_peers(a)) == 2, 10, what="a-c")
    a.weave("forget", c.ip)
    assert a.weave("status", "targets").stdout.strip() == ""
    # Targets survive a restart of the router (persisted in WEAVE_DATADIR).
    a.weave("connect", c.ip)
    a.weave("stop")
    a.weave("launch", "--no-discovery")
    assert a.weave("status", "targets").stdout.split() == [f"{c.ip}:6783"]
    # An unreachable target is retried with backoff and shown as such.
    a.weave("connect", "192.0.2.200")
    wait_for(lambda: any(x["address"] == "192.0.2.200:6783" and x["state"] == "retrying"
                         for x in report(a)["connections"]), 15, what="retrying target")


def test_garbage_on_6783_does_not_kill_the_router(lab_factory):
    lab = lab_factory(2)
    a, b = lab.hosts
    a.weave("launch")
    for payload in (b"GET / HTTP/1.1\r\n\r\n", os.urandom(4096), b"weavenet-mesh\x00\x01\x01" + b"\xff" * 8):
        code = (f"import socket; s=socket.create_connection(('{a.ip}',6783)); s.sendall({payload!r});"
                "s.settimeout(3); print(len(s.recv(65536)))")
        b.exec("python3", "-c", code, check=False)
    b.weave("launch", a.ip)
    wait_for(lambda: len(established_peers(a)) == 1, 10, what="real peer after garbage")
    text = log_text(a)
    assert "bad protocol header" in text
    assert report(a)["pid"] == a.router_pid()


def test_api_metrics_and_report_keys(lab_factory):
    lab = lab_factory(2)
    names = launch_chain(lab.hosts)
    wait_for(lambda: full_mesh(lab.hosts, names), 10, what="mesh")
    a = lab.host(1)
    code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:6784/metrics').read().decode())"
    metrics = a.exec("python3", "-c", code).stdout
    assert 'weave_connections{state="established"} 1.0' in metrics
    assert "weave_peers 2.0" in metrics
    assert f'weave_heartbeat_rtt_seconds{{nickname="h2",peer="{names[1]}"}}' in metrics
    assert "weave_gossip_messages_total" in metrics
    r = json.loads(a.weave("report").stdout)["router"]
    assert {"name", "nickname", "encryption", "peers", "connections", "targets"} <= r.keys()
    assert {"name", "nickname", "connections"} <= r["peers"][0].keys()
    assert {"address", "outbound", "state", "info"} <= r["connections"][0].keys()
    # The API listens on loopback only, never on the underlay address.
    probe = f"import socket;s=socket.socket();print(s.connect_ex(('{a.ip}',6784)))"
    assert lab.host(2).exec("python3", "-c", probe).stdout.strip() != "0"


def test_restarted_router_keeps_name_and_is_seen_as_new(lab_factory):
    lab = lab_factory(2)
    a, b = lab.hosts
    names = launch_chain(lab.hosts)
    wait_for(lambda: full_mesh(lab.hosts, names), 10, what="mesh")
    uid_before = next(p["uid"] for p in report(a)["peers"] if p["name"] == names[1])
    os.kill(b.router_pid(), signal.SIGKILL)
    (b.rundir / "weave.pid").unlink()
    assert b.weave("launch").stdout.strip() == names[1]  # persisted name, persisted target
    wait_for(lambda: full_mesh(lab.hosts, names), 15, what="mesh after restart")
    uid_after = next(p["uid"] for p in report(a)["peers"] if p["name"] == names[1])
    assert uid_after != uid_before
    assert "weave" in b.exec("ip", "-o", "link", "show", "weave").stdout
    b.weave("reset")
    assert not (b.datadir / "peer-name").exists()
    assert b.exec("ip", "link", "show", "weave", check=False).returncode != 0  # bridge gone too
    assert b.weave("launch").stdout.strip() != names[1]
