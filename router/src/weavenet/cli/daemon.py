"""Background launch and stop of the router process (pid file, log file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ..api.client import APIError, Client, RouterNotRunning
from ..weaver.paths import Paths
from ..weaver.signals import RESTART_SIGNAL

START_TIMEOUT = 30.0


def running_pid(paths: Paths) -> int | None:
    try:
        pid = int(paths.pidfile.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        pass
    if _is_zombie(pid):  # killed, not yet reaped (its parent is gone and init may be slow or absent)
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def launch(paths: Paths, router_args: list[str], password: str | None) -> str:
    """Start `weave router` detached; return its peer name once it answers. Raises RuntimeError."""
    pid = running_pid(paths)
    if pid is not None:
        raise RuntimeError(f"weave router is already running (pid {pid}); use 'weave stop' first")
    paths.rundir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("WEAVE_PASSWORD", None)
    if password:
        env["WEAVE_PASSWORD"] = password  # never on the command line, where `ps` would show it
    log_offset = paths.logfile.stat().st_size if paths.logfile.exists() else 0
    with open(paths.logfile, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "weavenet.cli.main", "router", *router_args],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                                start_new_session=True, close_fds=True)
    client = Client.for_paths(paths, timeout=2.0)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(_last_error(paths, log_offset) or f"weave router exited with status {proc.returncode}")
        try:
            return client.report()["router"]["name"]
        except (RouterNotRunning, APIError, OSError, ValueError):
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"weave router did not answer within {START_TIMEOUT:.0f}s; see {paths.logfile}")


def _last_error(paths: Paths, offset: int) -> str:
    try:
        with open(paths.logfile, "rb") as f:
            f.seek(offset)
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        if "weave:" in ln or "ERROR" in ln:
            return ln.split("weave: ", 1)[-1]
    return lines[-1] if lines else ""


def stop(paths: Paths, timeout: float = 10.0, restart: bool = False) -> bool:
    """Stop the router; True if one was running. restart: the fast path keeps forwarding until the next
    router starts (RESTART_SIGNAL; a router older than it ends at once, its kernel state left as it is)."""
    pid = running_pid(paths)
    if pid is None:
        return False
    os.kill(pid, RESTART_SIGNAL if restart else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True
