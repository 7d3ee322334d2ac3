"""Network namespaces: naming the target of an attach, and running code inside one.

Everything netlink-related in this package acts on *the network namespace of the calling thread*
(a pyroute2 ``IPRoute`` socket, an AF_PACKET socket or a TAP device belongs to the namespace of the
thread that creates it). To touch another namespace we therefore run a function in a short-lived
thread that ``setns()``-es into it, instead of forking (pyroute2's ``IPRoute(netns=...)`` forks a
child per socket, which is slow and unfriendly to a multi-threaded router).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def resolve_target(target: str) -> str:
    """Turn a user-facing target into the path of a netns file.

    Kept as a table of prefix -> resolver so that more kinds of targets (Docker container names)
    can be added without touching callers.
    """
    kind, sep, value = target.partition(":")
    resolver = _RESOLVERS.get(kind) if sep and value else None
    if resolver is None:
        raise ValueError(f"bad target {target!r}: expected netns:NAME or pid:PID")
    return resolver(value)


def _from_netns_name(name: str) -> str:
    if "/" in name or name in (".", ".."):
        raise ValueError(f"bad netns name {name!r}")
    path = os.path.join(NETNS_RUN_DIR, name)
    if not os.path.exists(path):
        raise ValueError(f"no network namespace named {name!r} ({path} does not exist)")
    return path


def _from_pid(pid: str) -> str:
    if not pid.isdigit() or int(pid) <= 0:
        raise ValueError(f"bad pid {pid!r}: expected a positive integer")
    path = f"/proc/{int(pid)}/ns/net"
    if not os.path.exists(path):
        raise ValueError(f"no process with pid {pid} ({path} does not exist)")
    return path


_RESOLVERS: dict[str, Callable[[str], str]] = {
    "netns": _from_netns_name,
    "pid": _from_pid,
}


def check_netns_path(path: str) -> str:
    """A netns file we can enter (checked cheaply: existence; setns reports anything else)."""
    if not isinstance(path, str) or not os.path.exists(path):
        raise ValueError(f"no network namespace at {path!r}")
    return path


def setns(fd: int) -> None:
    """setns(2) for the calling thread only (Python 3.11 has no os.setns)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def run_in_netns(path: str, fn: Callable[..., T], *args, **kwargs) -> T:
    """Call ``fn(*args, **kwargs)`` in a thread that lives in the namespace at ``path``.

    Returns fn's result or re-raises its exception in the caller. The thread starts in the
    caller's namespace (a new thread inherits the creating thread's namespace, not the process's),
    and goes back to it before ending, so nothing leaks.
    """
    try:
        target_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ValueError(f"cannot open network namespace {path}: {e.strerror}") from None
    result: list = []
    error: list[BaseException] = []

    def body() -> None:
        # /proc/thread-self, not /proc/self: the caller may itself be a thread in another namespace.
        home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                setns(target_fd)
            except OSError as e:
                raise ValueError(f"{path} is not a network namespace ({e.strerror})") from None
            try:
                result.append(fn(*args, **kwargs))
            finally:
                setns(home_fd)
        except BaseException as e:  # handed to the caller, re-raised there
            error.append(e)
        finally:
            os.close(home_fd)

    try:
        t = threading.Thread(target=body, name=f"netns:{os.path.basename(path)}", daemon=True)
        t.start()
        t.join()
    finally:
        os.close(target_fd)
    if error:
        raise error[0]
    return result[0]


def netns_id(path: str) -> int:
    """The namespace's inode number: unique among live namespaces and stable for its lifetime."""
    return os.stat(path).st_ino
