"""The sleeve's C lane (``_lane.c``): whether it is built here, and making its parts.

The lane repeats, without the GIL, what the engine decided for a (source, destination) MAC pair a moment
ago, and does every datagram's mechanical work; the engine keeps every decision. Without the compiled
module (no C compiler where the router was installed) the engine does it all in Python, slower.
"""

from __future__ import annotations

import os

try:
    from . import _lane
    WHY = ""
except ImportError as e:      # not built, or built for another glibc: the engine's Python path
    _lane = None
    WHY = str(e) or type(e).__name__

AVAILABLE = _lane is not None


def describe(on: bool) -> str:
    """For the router's log: which sleeve runs, and why not the lane."""
    if on:
        return "the C lane (datapath/_lane.c) with the Python engine"
    return f"the Python engine only ({WHY or 'WEAVENET_SLEEVE_LANE=off'})"


def wanted(lane: bool | None) -> bool:
    """lane None: use it where it is built, unless WEAVENET_SLEEVE_LANE=off (to compare the two paths)."""
    if lane is None:
        lane = os.environ.get("WEAVENET_SLEEVE_LANE", "on") != "off"
    return lane and AVAILABLE


def _pointers() -> tuple[int, int, int, int]:
    """libsodium's AEAD functions in PyNaCl's own build (no second copy of libsodium to link): addresses for
    the lane to call. AEGIS-256 0 where PyNaCl predates it (sleeve.AEGIS_AVAILABLE is then False too)."""
    from nacl._sodium import ffi, lib

    def addr(name: str) -> int:
        return int(ffi.cast("uintptr_t", ffi.addressof(lib, name))) if hasattr(lib, name) else 0

    return (addr("crypto_aead_chacha20poly1305_ietf_encrypt"), addr("crypto_aead_chacha20poly1305_ietf_decrypt"),
            addr("crypto_aead_aegis256_encrypt"), addr("crypto_aead_aegis256_decrypt"))


def new_lane(tap_fd: int, sock_fd: int, halt_fd: int, wake_fd: int, off: int, ourself: bytes, max_frame: int):
    cs, co, aseal, aopen = _pointers()
    return _lane.Lane(tap_fd, sock_fd, halt_fd, wake_fd, off, ourself, max_frame, cs, co, aseal, aopen)


def new_link(name: bytes, addr: tuple[str, int], tx_key: bytes | None, rx_key: bytes | None, aegis: bool,
             pmtu: int):
    """The C half of a PeerLink, or None (not built, or an address the lane cannot carry: IPv6)."""
    if _lane is None:
        return None
    try:
        return _lane.Link(name, addr[0], addr[1], tx_key, rx_key, aegis, pmtu)
    except ValueError:
        return None
