"""asyncio adapter for peer TCP connections: moves bytes between sockets and the sans-I/O Mesh.

On the loop only (the mesh is the loop's; thread map: docs/architecture.md)."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import Router


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
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A peer that stops acknowledging (host gone, link cut) is dropped by the kernel (MeshConfig).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                            int(self.router.mesh.config.tcp_user_timeout * 1000))
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
        self.router.execute(self.router.mesh.connection_lost(self.conn_id, reason, self.router.clock()))
