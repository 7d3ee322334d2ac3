"""recvmmsg(2) for the sleeve's UDP socket: up to BATCH datagrams per system call (Python's socket module
has no recvmmsg). Called through ctypes, which releases the GIL during the call; buffers are allocated
once. Linux only; ``Receiver.available`` is False where libc lacks it (the engine then uses recvfrom).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket

BATCH = 64
BUF = 65536            # one UDP datagram at most (a peer's datagram is checked for size afterwards)
MSG_DONTWAIT = 0x40


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_Iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


class _SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16), ("addr", ctypes.c_uint8 * 4),
                ("zero", ctypes.c_uint8 * 8)]


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = lib.recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_RECVMMSG = _libc()


ADDR = ctypes.sizeof(_SockaddrIn)


class Receiver:
    """Receives batches from one IPv4 UDP socket without blocking: [(datagram, source ip)], empty when
    nothing is waiting. Raises OSError for errors other than EAGAIN/EINTR."""

    available = _RECVMMSG is not None

    def __init__(self, sock: socket.socket, batch: int = BATCH, bufsize: int = BUF) -> None:
        self.fd = sock.fileno()
        self.batch = batch
        self.bufs = (ctypes.c_char * (bufsize * batch))()
        self.addrs = (_SockaddrIn * batch)()
        self.iovs = (_Iovec * batch)()
        self.msgs = (_Mmsghdr * batch)()
        base = ctypes.addressof(self.bufs)
        for i in range(batch):
            self.iovs[i].base = base + i * bufsize
            self.iovs[i].len = bufsize
            h = self.msgs[i].hdr
            h.name = ctypes.addressof(self.addrs[i])
            h.iov = ctypes.pointer(self.iovs[i])
            h.iovlen = 1
        self.bufsize = bufsize
        self.view = memoryview(self.bufs).cast("B")
        self.addr_view = memoryview(self.addrs).cast("B")
        self.names: dict[bytes, str] = {}     # source address bytes -> dotted quad

    def recv(self) -> list[tuple[bytes, str]]:
        for i in range(self.batch):
            self.msgs[i].hdr.namelen = ctypes.sizeof(_SockaddrIn)
        n = _RECVMMSG(self.fd, self.msgs, self.batch, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return []
            raise OSError(err, os.strerror(err))
        out = []
        view, size, addrs, names, msgs = self.view, self.bufsize, self.addr_view, self.names, self.msgs
        for i in range(n):
            raw = addrs[i * ADDR + 4:i * ADDR + 8].tobytes()
            ip = names.get(raw)
            if ip is None:
                if len(names) >= 1024:   # any source can send: the cache stays small
                    names.clear()
                ip = names[raw] = socket.inet_ntoa(raw)
            out.append((view[i * size:i * size + msgs[i].len].tobytes(), ip))
        return out
