"""Socket receive buffers beyond net.core.rmem_max (the router runs as root)."""

from __future__ import annotations

import socket

SO_RCVBUFFORCE = 33   # not in Python's socket module


def set_rcvbuf(sock: socket.socket, size: int) -> None:
    """Receive buffer of `size` bytes (the kernel doubles it for its bookkeeping). As root past
    net.core.rmem_max; otherwise as much as that limit allows. Also turns off the kernel's autotuning
    of this socket's buffer (which grows it only while the application keeps reading)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
