"""One bridge's forwarding database, dumped with the kernel doing the filtering and struct the decoding.

pyroute2 (0.9) dumps every FDB of the namespace and decodes each entry into its message objects, ~0.1 ms
apiece: with a fast path the VXLAN device holds an entry per peer and per advertised MAC (44 ms for 330
entries, every few seconds). Here the kernel is asked for the bridge's ports only (an ifinfomsg with
IFLA_MASTER, as `bridge fdb show br BRIDGE` asks), and the fields needed are read with struct (~1 ms for the
same dump). One port's entries are asked for the same way (the ifinfomsg's index, as `bridge fdb show dev
PORT` asks): the flushes of a fast path going up or down read them, and through pyroute2 those cost ~140 ms
each at 40 peers, most of the netlink thread's time while a mesh forms. Every length is checked: a malformed
reply ends the read with an error, never a bad entry.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

RTM_GETNEIGH = 30
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NDA_DST, NDA_LLADDR, NDA_VLAN, NDA_MASTER = 1, 2, 5, 9
IFLA_MASTER = 10
NLMSGHDR = struct.Struct("=IHHII")        # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")      # family, type, index, flags, change
NDMSG = struct.Struct("=BxxxiHBB")        # family, ifindex, state, flags, type
RTATTR = struct.Struct("=HH")
MAX_REPLY = 1 << 20                       # a dump longer than this is not a bridge's FDB we can trust


class FdbEntry(NamedTuple):
    mac: str
    ifindex: int
    state: int
    flags: int
    master: int
    dst: str = ""     # a VXLAN device's own entry: the remote (NDA_DST)
    vlan: int = 0


def request(bridge: int, seq: int = 1, port: int = 0) -> bytes:
    """Dump the FDB entries of `bridge`'s ports (only of the port `port`, if given: the kernel reads the
    ifinfomsg's index as the port to dump)."""
    body = IFINFOMSG.pack(socket.AF_BRIDGE, 0, port, 0, 0) + RTATTR.pack(RTATTR.size + 4, IFLA_MASTER) \
        + struct.pack("=I", bridge)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse(buf: bytes, seq: int = 1) -> tuple[list[FdbEntry], bool]:
    """The entries in one read of the dump, and whether the dump is done. Raises ValueError on a
    malformed message and OSError on the kernel's error."""
    out: list[FdbEntry] = []
    off = 0
    while off + NLMSGHDR.size <= len(buf):
        length, kind, _, mseq, _ = NLMSGHDR.unpack_from(buf, off)
        if length < NLMSGHDR.size or off + length > len(buf):
            raise ValueError(f"netlink message length {length} out of range")
        if mseq != seq:
            raise ValueError(f"netlink reply to sequence {mseq}, not {seq}")
        body = off + NLMSGHDR.size
        if kind == NLMSG_DONE:
            return out, True
        if kind == NLMSG_ERROR:
            err = struct.unpack_from("=i", buf, body)[0] if length >= NLMSGHDR.size + 4 else -1
            if err:
                raise OSError(-err, f"FDB dump refused: {err}")
            return out, True
        if length < NLMSGHDR.size + NDMSG.size:
            raise ValueError("neighbour message shorter than its header")
        _, ifindex, state, flags, _ = NDMSG.unpack_from(buf, body)
        mac, master, dst, vlan = "", 0, "", 0
        a = body + NDMSG.size
        end = off + length
        while a + RTATTR.size <= end:
            alen, atype = RTATTR.unpack_from(buf, a)
            if alen < RTATTR.size or a + alen > end:
                raise ValueError(f"attribute length {alen} out of range")
            value = buf[a + RTATTR.size:a + alen]
            if atype == NDA_LLADDR and len(value) == 6:
                mac = value.hex(":")
            elif atype == NDA_MASTER and len(value) == 4:
                master = struct.unpack("=I", value)[0]
            elif atype == NDA_DST and len(value) in (4, 16):
                dst = socket.inet_ntop(socket.AF_INET if len(value) == 4 else socket.AF_INET6, value)
            elif atype == NDA_VLAN and len(value) == 2:
                vlan = struct.unpack("=H", value)[0]
            a += _align(alen)
        if mac:
            out.append(FdbEntry(mac, ifindex, state, flags, master, dst, vlan))
        off += _align(length)
    if off != len(buf):
        raise ValueError("truncated netlink message")
    return out, False


def bridge_fdb(index: int, port: int = 0) -> list[FdbEntry]:
    """The FDB entries of the bridge `index` and of its ports (theirs too: a VXLAN port's own entries have
    no NDA_MASTER), in the current namespace; with `port`, that port's only (the bridge's entries for it and
    the port device's own)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.settimeout(5.0)
        s.bind((0, 0))
        s.send(request(index, port=port))
        out: list[FdbEntry] = []
        total = 0
        while True:
            data = s.recv(65536)
            total += len(data)
            if total > MAX_REPLY:
                raise ValueError("FDB dump too long")
            entries, done = parse(data)
            out += entries
            if done:
                return out
