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
import struct

BATCH = 64
BUF = 65536            # one UDP datagram at most (a peer's datagram is checked for size afterwards)
MSG_DONTWAIT = 0x40
SOL_UDP, UDP_GRO = 17, 104   # <linux/udp.h>: the kernel may hand over several datagrams of one flow at once
CONTROL = 32                 # room for one cmsghdr (16 bytes) and an int, aligned


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
    # The headers go by address (an int): ctypes converts that without the type checks a POINTER takes.
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_RECVMMSG = _libc()


ADDR = ctypes.sizeof(_SockaddrIn)


class _Cmsghdr(ctypes.Structure):
    _fields_ = [("len", ctypes.c_size_t), ("level", ctypes.c_int), ("type", ctypes.c_int), ("value", ctypes.c_int)]


# The fields the receive path reads and resets per datagram, read through struct on memoryviews of the
# arrays: a ctypes attribute access costs microseconds, and a small datagram (a TCP ACK) is ~20 of them.
MMSG = ctypes.sizeof(_Mmsghdr)
MSG_LEN = struct.Struct("=I")                        # _Mmsghdr.len: bytes received
MSG_LEN_AT = _Mmsghdr.len.offset
NAMELEN = struct.Struct("=I")
NAMELEN_AT = _Msghdr.namelen.offset
CONTROLLEN = struct.Struct("@N")                     # size_t
CONTROLLEN_AT = _Msghdr.controllen.offset
CMSG = ctypes.sizeof(_Cmsghdr)
CMSG_FIELDS = struct.Struct("@Niii")                 # len, level, type, value


class Receiver:
    """Receives batches from one IPv4 UDP socket without blocking: [(data, source ip, seg)], empty when
    nothing is waiting. Raises OSError for errors other than EAGAIN/EINTR.

    seg 0: data is one datagram. With UDP GRO on (``gro=True``, where the kernel has it) a message may
    hold a train of datagrams of one source, each `seg` bytes but the last (a UDP_GRO control message
    says so); the caller splits it (``sleeve.split_train``)."""

    available = _RECVMMSG is not None

    def __init__(self, sock: socket.socket, batch: int = BATCH, bufsize: int = BUF, gro: bool = True) -> None:
        self.fd = sock.fileno()
        self.gro = False
        if gro:
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        self.controls = (_Cmsghdr * batch)()
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
            if self.gro:
                h.control = ctypes.addressof(self.controls[i])
        self.bufsize = bufsize
        self.view = memoryview(self.bufs).cast("B")
        self.addr_view = memoryview(self.addrs).cast("B")
        self.msgs_view = memoryview(self.msgs).cast("B")
        self.msgs_at = ctypes.addressof(self.msgs)
        self.controls_view = memoryview(self.controls).cast("B")
        self._reset(batch)
        self.names: dict[bytes, str] = {}     # source address bytes -> dotted quad

    def recv(self) -> list[tuple[bytes, str, int]]:
        gro = self.gro
        # The kernel rewrites namelen/controllen only in the headers it filled: reset those (set once in
        # _reset for all), not all BATCH of them per call (that loop cost ~20 us per call, idle or not).
        n = _RECVMMSG(self.fd, self.msgs_at, self.batch, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return []
            raise OSError(err, os.strerror(err))
        out = []
        view, size, addrs, names, hdrs = self.view, self.bufsize, self.addr_view, self.names, self.msgs_view
        for i in range(n):
            raw = addrs[i * ADDR + 4:i * ADDR + 8].tobytes()
            ip = names.get(raw)
            if ip is None:
                if len(names) >= 1024:   # any source can send: the cache stays small
                    names.clear()
                ip = names[raw] = socket.inet_ntoa(raw)
            at = i * MMSG
            start = i * size
            end = start + MSG_LEN.unpack_from(hdrs, at + MSG_LEN_AT)[0]
            seg = 0
            if gro and CONTROLLEN.unpack_from(hdrs, at + CONTROLLEN_AT)[0]:
                clen, level, ctype, value = CMSG_FIELDS.unpack_from(self.controls_view, i * CMSG)
                if level == SOL_UDP and ctype == UDP_GRO and clen >= 20:
                    seg = value
            out.append((view[start:end].tobytes(), ip, seg if 0 < seg < end - start else 0))
        self._reset(n)
        return out

    def _reset(self, n: int) -> None:
        """The first n headers' namelen and controllen back to their buffers' sizes (through struct, as read)."""
        hdrs, controllen = self.msgs_view, CMSG if self.gro else 0
        for at in range(0, n * MMSG, MMSG):
            NAMELEN.pack_into(hdrs, at + NAMELEN_AT, ADDR)
            CONTROLLEN.pack_into(hdrs, at + CONTROLLEN_AT, controllen)
