"""asyncio adapter for peer TCP connections: moves bytes between sockets and the sans-I/O Mesh.

On the loop only (the mesh is the loop's; thread map: docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

from ..net.sockbuf import set_rcvbuf

if TYPE_CHECKING:
    from ..mesh.core import MeshConfig
    from .app import Router


def tune_peer_socket(sock: socket.socket, config: MeshConfig) -> None:
    """Small messages leave at once (no Nagle), and the kernel ends a connection whose peer stopped
    acknowledging (host gone, link cut) within ~1.5 s: TCP_USER_TIMEOUT on the heartbeats that go every 1 s
    each way, and keepalive as a backstop after tcp_keepalive idle seconds (MeshConfig). A router starved of
    CPU (an overloaded host) is not taken for a gone one: its kernel keeps answering, and a receive buffer
    of tcp_rcvbuf keeps its window open while the peers' gossip waits unread (a closed window for
    TCP_USER_TIMEOUT would end the connection although its host answers every probe)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, config.tcp_keepalive)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    set_patience(sock, config, False)
    set_rcvbuf(sock, config.tcp_rcvbuf)


def set_patience(sock: socket.socket, config: MeshConfig, patient: bool) -> None:
    """The user timeout for data left unacknowledged: the usual one, or the patient one an overloaded host
    gets (MeshConfig.late_limit)."""
    timeout = config.tcp_user_timeout_patient if patient else config.tcp_user_timeout
    with contextlib.suppress(OSError):   # a socket closing under us: nothing to tune, the rest goes on
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeout * 1000))


def apply_patience(transport: asyncio.BaseTransport | None, config: MeshConfig, patient: bool) -> None:
    """A Patience action for the connection's transport (gone or closing: nothing to do)."""
    sock = transport.get_extra_info("socket") if transport is not None and not transport.is_closing() else None
    if sock is not None:
        set_patience(sock, config, patient)


class PeerProtocol(asyncio.Protocol):
    def __init__(self, router: Router, conn_id: int | None = None) -> None:
        self.router = router
        self.conn_id = conn_id
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune_peer_socket(sock, self.router.mesh.config)
        ip, port = transport.get_extra_info("peername")[:2]
        mesh, now = self.router.mesh, self.router.clock()
        if self.conn_id is None:
            self.conn_id, actions = mesh.accept(ip, port, now)
        else:
            actions = mesh.dial_succeeded(self.conn_id, ip, now)
        self.router.transports[self.conn_id] = transport
        self.router.execute(actions)

    def data_received(self, data: bytes) -> None:
        assert self.conn_id is not None
        self.router.execute(self.router.mesh.data_received(self.conn_id, data, self.router.clock()))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn_id is None:
            return
        self.router.transports.pop(self.conn_id, None)
        reason = f"connection lost: {exc}" if exc else "connection closed by peer"
        # ETIMEDOUT: keepalive or TCP_USER_TIMEOUT, nothing acknowledged (a reset or EOF: the peer's host is up)
        self.router.execute(self.router.mesh.connection_lost(self.conn_id, reason, self.router.clock(),
                                                             link_failed=isinstance(exc, TimeoutError)))
