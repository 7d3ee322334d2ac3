"""Shared pyroute2 helpers: one IPRoute per call (one kept per long-lived worker thread that asks for it,
see keep_iproute), link lookups, input validation.

pyroute2 notes (0.9.x):
- ``IPRoute`` is a synchronous wrapper around an asyncio core. Its socket and event loop are
  thread-local and are created in the *network namespace of the calling thread*; see
  ``netns.run_in_netns`` for working in another namespace.
- It runs its own event loop with ``run_until_complete``, so it cannot be used from a coroutine
  running on an event loop ("This event loop is already running"): the router must call this
  package from a worker thread (``asyncio.to_thread``). ``iproute()`` turns that mistake into a
  clear error.
- ``ipr.link("get", ifname=...)`` asks the kernel for one link (ENODEV when missing), whereas
  ``link_lookup`` dumps every link: we use the former.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

IFNAMSIZ = 16
PORT_UP_TIMEOUT = 5.0
BR_STATE_FORWARDING = 3
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


_kept = threading.local()


def keep_iproute() -> None:
    """Called once in a long-lived worker thread (the data plane's netlink thread): its `iproute()` calls
    then share one IPRoute (per network namespace) instead of opening one each (~0.8 ms of CPU a call)."""
    _kept.enabled = True


def release_iproute() -> None:
    """Close the calling thread's kept IPRoute, if any (its last job, before the executor shuts down)."""
    ipr, _kept.ipr = getattr(_kept, "ipr", None), None
    if ipr is not None:
        ipr.close()


def _netns_id() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@contextmanager
def iproute() -> Iterator[IPRoute]:
    """An IPRoute bound to the calling thread's namespace, closed on exit (kept for the next call in a
    thread that asked for it, see keep_iproute; dropped after a failure that leaves this function)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("weavenet.net calls block: run them in a worker thread (asyncio.to_thread)")
    if not getattr(_kept, "enabled", False):
        ipr = IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()
        return
    ns = _netns_id()
    ipr = getattr(_kept, "ipr", None)
    if ipr is None or _kept.ns != ns:
        if ipr is not None:
            ipr.close()
        ipr = _kept.ipr = IPRoute()
        _kept.ns = ns
    try:
        yield ipr
    except BaseException:
        _kept.ipr = None   # it may be mid-conversation: the next call opens a fresh one
        ipr.close()
        raise


@contextmanager
def netlink_errors(what: str) -> Iterator[None]:
    """Turn a NetlinkError (whose text is just "(17, 'File exists')") into a one-line RuntimeError."""
    try:
        yield
    except NetlinkError as e:
        raise RuntimeError(f"{what}: {os.strerror(e.code) if isinstance(e.code, int) else e}") from None


def check_ifname(name: str) -> str:
    if not name or len(name) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name) or name in (".", ".."):
        raise ValueError(f"bad interface name {name!r}: 1-15 characters, no '/' or spaces")
    return name


def check_mtu(mtu: int) -> int:
    if not isinstance(mtu, int) or not 68 <= mtu <= 65535:
        raise ValueError(f"bad MTU {mtu!r}: expected 68..65535")
    return mtu


def check_mac(mac: str) -> str:
    norm = mac.strip().lower().replace("-", ":") if isinstance(mac, str) else ""
    if not _MAC_RE.match(norm):
        raise ValueError(f"bad MAC address {mac!r}: expected xx:xx:xx:xx:xx:xx")
    return norm


def check_ip(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise ValueError(f"bad IP address {ip!r}") from None


def get_link(ipr: IPRoute, name: str):
    """The link message for ``name``, or None when there is no such link."""
    try:
        return ipr.link("get", ifname=check_ifname(name))[0]
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise


def require_link(ipr: IPRoute, name: str, kind: str | None = None):
    """Like get_link, but a missing link (or one of another kind) is a RuntimeError."""
    link = get_link(ipr, name)
    if link is None:
        raise RuntimeError(f"link {name} does not exist")
    if kind is not None and link_kind(link) != kind:
        raise RuntimeError(f"link {name} is a {link_kind(link) or 'plain device'}, not a {kind}")
    return link


def link_kind(link) -> str | None:
    return link.get(("linkinfo", "kind"))


def link_mac(link) -> str:
    return link.get("IFLA_ADDRESS")


def delete_link_index(ipr: IPRoute, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as e:
        if e.code != errno.ENODEV:
            raise


def wait_link(ipr: IPRoute, index: int, cond, timeout: float, interval: float = 0.01) -> bool:
    """Poll a link until ``cond(link)`` holds; False on timeout (callers decide if that matters)."""
    deadline = time.monotonic() + timeout
    while True:
        if cond(ipr.link("get", index=index)[0]):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_forwarding(link) -> bool:
    """The bridge forwards through this port (BR_STATE_FORWARDING).

    A new port only starts forwarding once the kernel's linkwatch worker has noticed its carrier
    (asynchronously, and late on a busy machine); until then the bridge drops what it receives.
    """
    return link.get(("linkinfo", "slave_data", "IFLA_BRPORT_STATE")) == BR_STATE_FORWARDING


def wait_forwarding(ipr: IPRoute, index: int, timeout: float = PORT_UP_TIMEOUT) -> bool:
    """Wait (bounded) until a new bridge port forwards, so the caller's first frames are not lost.

    A timeout is only logged: a bridge that is down never forwards, and the port is still usable.
    """
    if wait_link(ipr, index, port_forwarding, timeout):
        return True
    log.warning("bridge port #%s is not forwarding after %ss", index, timeout)
    return False


def oper_up(link) -> bool:
    return link.get("IFLA_OPERSTATE") == "UP"
