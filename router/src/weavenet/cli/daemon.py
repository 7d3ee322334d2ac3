"""Background launch and stop of the router process (pid file, log file)."""

from __future__ import annotations

import contextlib
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


def launch(paths: Paths, router_args: list[str], password: str | None, replace: bool = False) -> str:
    """Start `weave router` detached; return its peer name once it answers. Raises RuntimeError.
    replace: a running router is taken over (`weave router --takeover PID`: see takeover)."""
    pid = running_pid(paths)
    if pid is not None and not replace:
        raise RuntimeError(f"weave router is already running (pid {pid}); use 'weave stop' first")
    if pid is not None:
        router_args = ["--takeover", str(pid), *router_args]   # before the peers (positional)
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
            router = client.report()["router"]
            if router.get("pid") == proc.pid:   # not the router being replaced, still answering
                return router["name"]
        except (RouterNotRunning, APIError, OSError, ValueError):
            pass
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
    _end(pid, RESTART_SIGNAL if restart else signal.SIGTERM, timeout)
    return True


def _end(pid: int, sig: int, timeout: float) -> None:
    """Signal pid and wait until it has exited (SIGKILL after timeout). An exited router is a zombie until
    its parent (init: the launching `weave` is gone) reaps it, which some inits do only every few seconds:
    a zombie has exited, waiting for the reaping made every restart seconds longer."""
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if _is_zombie(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def takeover(paths: Paths, pid: int, timeout: float = 10.0) -> None:
    """In a new router (`weave launch --replace`), its code loaded: stop the old one for a restart (the
    fast path keeps forwarding) and wait until it has gone, so that the sleeve's gap is the old router's
    exit and the new one's setup, not also Python's start and imports (~1.5 s). pid: the router that was
    running when `weave launch --replace` started; if another runs now, nothing is stopped (RuntimeError)."""
    now = running_pid(paths)
    if now is None:
        return   # it has gone meanwhile
    if now != pid:
        raise RuntimeError(f"weave router pid {now} is running, not pid {pid} that was to be replaced")
    _end(pid, RESTART_SIGNAL, timeout)
