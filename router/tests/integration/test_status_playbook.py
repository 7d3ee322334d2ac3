"""playbooks/status.yml run by real ansible-playbook against a 3-router namespace lab (local connections; each
host's weave_bin runs `weave` in its namespace) plus two unreachable hosts, one of them a mesh of its own: the
table shows every host's peers connected over fastdp, the unreachable hosts as '!!' rows, and the mesh's
picture is written. The collection's own CI runs it on Docker hosts too (scripts/test-collection systemd)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import wait_for
from .helpers import full_mesh, launch_chain

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = REPO / ".venv-ansible" / "bin" / "ansible-playbook"


@pytest.mark.skipif(not PLAYBOOK.exists(), reason="needs the Ansible venv (source scripts/lib/ansible-env.sh)")
def test_status_playbook_tables_every_host_and_marks_the_unreachable(lab_factory, tmp_path):
    lab = lab_factory(3)
    names = launch_chain(lab.hosts)
    wait_for(lambda: full_mesh(lab.hosts, names), 20, what="full mesh")
    hosts = []
    for h in lab.hosts:
        wrap = tmp_path / f"weave-h{h.index}"
        wrap.write_text(f'#!/bin/sh\nexec ip netns exec {h.netns} {lab.weave_cmd} "$@"\n')
        wrap.chmod(0o755)
        py = PLAYBOOK.parent / "python"
        hosts.append(f"h{h.index}: {{ansible_connection: local, ansible_python_interpreter: {py}, "
                     f"weave_bin: {wrap}, weave_rundir: {h.rundir}, weave_datadir: {h.datadir}}}")
    down = "{ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: 1}"   # refused at once
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    weave:\n      children:\n"
                   "        mesh_ns:\n          vars: {weave_mesh_group: mesh_ns}\n          hosts:\n"
                   + "".join(f"            {line}\n" for line in [*hosts, f"h9: {down}"])
                   + "        mesh_other:\n          vars: {weave_mesh_group: mesh_other}\n"
                   f"          hosts:\n            h8: {down}\n")
    out = tmp_path / "status"
    p = subprocess.run([str(PLAYBOOK), "-i", str(inv), "-e", f"weave_status_dir={out}", "playbooks/status.yml"],
                       cwd=REPO, env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    table = (out / "mesh_ns.txt").read_text().splitlines()
    assert table[0].split() == ["HOST", "PEER", "STATE", "DATAPATH", "ENCRYPTED", "RTT", "LOSS", "PROBLEMS"]
    peers = [r.split() for r in table[1:-1] if not r.startswith("!!")]
    assert sorted((r[0], r[1].split("(")[1].rstrip(")")) for r in peers) == [
        (f"h{a}", f"h{b}") for a in (1, 2, 3) for b in (1, 2, 3) if a != b]
    assert all(r[2:5] == ["connected", "fastdp", "no"] for r in peers), table
    bad = [r for r in table if r.startswith("!!")]
    assert len(bad) == 1 and bad[0].split()[1:4] == ["h9", "-", "unreachable"], table
    assert table[-1] == "4 host(s), 7 row(s), 1 unhealthy (!!)"
    assert (out / "mesh_ns.svg").read_text().count("<svg") == 1
    assert (out / "mesh_other.txt").read_text().splitlines()[1].split()[:4] == ["!!", "h8", "-", "unreachable"]
    assert not (out / "mesh_other.svg").exists()
    assert "picture none (no router of the mesh answered, or no Graphviz)" in p.stdout
    assert f"mesh mesh_ns: table {out}/mesh_ns.txt, picture {out}/mesh_ns.svg" in p.stdout
    recap = {line.split()[0]: line for line in p.stdout.split("PLAY RECAP")[1].splitlines()[1:] if line.strip()}
    assert "changed=0" in recap["h2"] and "changed=0" in recap["h3"]   # nothing on the hosts changes
