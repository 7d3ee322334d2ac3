"""`weave launch --replace` (issue #14, rolling upgrades): the new router takes over from the running one —
a new process under the same peer name, the container's address kept, the encrypted sleeve carrying the
ping again — and the old router is gone, not left beside it. Real routers in a namespace lab."""

from __future__ import annotations

import os

from weavenet.cli import daemon

from .conftest import wait_for
from .helpers import established_peers, report
from .overlay import container, ping, wait_ping

PASSWORD = {"WEAVE_PASSWORD": "replace-test"}


def test_launch_replace_takes_over_keeping_name_address_and_sleeve(lab_factory):
    lab = lab_factory(2)
    a, b = lab.hosts
    for h in (a, b):
        h.weave("launch", "--nickname", f"h{h.index}", *([a.ip] if h is b else []), env=PASSWORD)
    names = [report(h)["name"] for h in (a, b)]
    wait_for(lambda: established_peers(a) == {names[1]}, 15, what="connection")
    c1, c2 = container(lab, a, "c1", "10.2.0.1/24"), container(lab, b, "c2", "10.2.0.2/24")
    wait_ping(c1, "10.2.0.2")
    old_pid = b.router_pid()

    assert b.weave("launch", "--replace", "--nickname", "h2", a.ip, env=PASSWORD).stdout.strip() == names[1]
    new_pid = b.router_pid()
    assert new_pid != old_pid and report(b)["pid"] == new_pid
    assert not os.path.exists(f"/proc/{old_pid}") or daemon._is_zombie(old_pid)   # exited (init may reap later)
    assert "took over from the router of pid" in (b.rundir / "weave.log").read_text()
    wait_for(lambda: established_peers(b) == {names[0]}, 15, what="connection after the takeover")
    wait_ping(c1, "10.2.0.2")
    assert ping(c2, "10.2.0.1")
    assert report(b)["config"]["encrypted"]
    # With no router running, --replace is a plain launch.
    b.weave("stop")
    assert b.weave("launch", "--replace", "--nickname", "h2", env=PASSWORD).stdout.strip() == names[1]
