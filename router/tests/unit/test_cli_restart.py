"""Restarting the router (issue #14): `weave stop` returns as soon as the router has exited (a zombie not yet
reaped by init counts as exited), and `weave launch --replace` starts the new router with --takeover PID,
which stops only that router, once its own code is loaded. Real processes (sleep) stand in for routers."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from weavenet.cli import daemon
from weavenet.cli.main import main
from weavenet.weaver.paths import Paths
from weavenet.weaver.signals import RESTART_SIGNAL


@pytest.fixture
def paths(tmp_path, monkeypatch) -> Paths:
    monkeypatch.setenv("WEAVE_RUNDIR", str(tmp_path / "run"))
    monkeypatch.setenv("WEAVE_DATADIR", str(tmp_path / "data"))
    monkeypatch.delenv("WEAVE_PASSWORD", raising=False)
    p = Paths.from_env()
    p.rundir.mkdir(parents=True)
    return p


@pytest.fixture
def fake_router(paths):
    """A process in the pid file, left unreaped once it exits (a zombie, as under a slow init)."""
    procs = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(["sleep", "60"])
        procs.append(proc)
        paths.pidfile.write_text(f"{proc.pid}\n")
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_stop_returns_when_the_router_is_a_zombie(paths, fake_router):
    proc = fake_router()
    t0 = time.monotonic()
    assert daemon.stop(paths, restart=True)
    assert time.monotonic() - t0 < 1.0   # not the 10 s timeout: the unreaped process counts as gone
    assert proc.wait(timeout=5) == -RESTART_SIGNAL


def test_takeover_stops_the_router_it_was_given(paths, fake_router):
    proc = fake_router()
    daemon.takeover(paths, proc.pid)
    assert proc.wait(timeout=5) == -RESTART_SIGNAL


def test_takeover_refuses_another_router(paths, fake_router):
    other = fake_router()
    with pytest.raises(RuntimeError, match=f"pid {other.pid} is running, not pid 1"):
        daemon.takeover(paths, 1)
    assert other.poll() is None   # untouched


def test_takeover_with_the_router_gone_meanwhile_is_a_start(paths):
    daemon.takeover(paths, 999_999)   # no pid file: nothing to stop, nothing signalled


def test_router_refuses_to_run_beside_a_router_it_does_not_take_over(paths, fake_router, capsys):
    proc = fake_router()
    assert main(["router", "--takeover", "1"]) == 1
    assert f"already running (pid {proc.pid})" in capsys.readouterr().err
    assert proc.poll() is None


def test_launch_replace_passes_the_running_router_before_the_peers(paths, fake_router, monkeypatch):
    proc = fake_router()
    seen = []

    class Spawned(Exception):
        pass

    def popen(args, **kwargs):
        seen.append(args)
        raise Spawned
    monkeypatch.setattr(daemon.subprocess, "Popen", popen)
    with pytest.raises(Spawned):
        daemon.launch(paths, ["--nickname", "a", "192.0.2.9"], None, replace=True)
    assert seen[0][:4] == [sys.executable, "-m", "weavenet.cli.main", "router"]
    assert seen[0][4:] == ["--takeover", str(proc.pid), "--nickname", "a", "192.0.2.9"]
    # Without --replace a running router is refused, as before.
    with pytest.raises(RuntimeError, match="already running"):
        daemon.launch(paths, [], None)
    assert proc.poll() is None


def test_launch_replace_is_a_launch_flag(capsys):
    with pytest.raises(SystemExit):
        main(["launch", "--help"])
    assert "--replace" in capsys.readouterr().out
