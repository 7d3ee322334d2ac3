"""The bridge FDB dump's decoder (weavenet.net.fdbdump): entries read right, and a malformed reply (lengths out
of range, truncated, another request's answer) refused with an error rather than read as entries."""

import socket
import struct

import pytest

from weavenet.net import fdbdump
from weavenet.net.fdbdump import NDA_LLADDR, NDA_MASTER, NDMSG, NLMSG_DONE, NLMSG_ERROR, NLMSGHDR, RTATTR, FdbEntry


def attr(kind: int, value: bytes) -> bytes:
    raw = RTATTR.pack(RTATTR.size + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


def neigh(mac: str, ifindex: int, master: int | None, state: int = 2, flags: int = 0, seq: int = 1) -> bytes:
    body = NDMSG.pack(socket.AF_BRIDGE, ifindex, state, flags, 0)
    body += attr(NDA_LLADDR, bytes.fromhex(mac.replace(":", "")))
    if master is not None:
        body += attr(NDA_MASTER, struct.pack("=I", master))
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), 28, 2, seq, 0) + body


def done(seq: int = 1) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + 4, NLMSG_DONE, 2, seq, 0) + bytes(4)


def test_entries_then_done():
    buf = neigh("02:00:00:00:00:01", 5, 2) + neigh("33:33:00:00:00:01", 5, None, 128, 2)
    assert fdbdump.parse(buf) == ([FdbEntry("02:00:00:00:00:01", 5, 2, 0, 2),
                                   FdbEntry("33:33:00:00:00:01", 5, 128, 2, 0)], False)
    assert fdbdump.parse(neigh("02:00:00:00:00:02", 7, 2) + done()) == ([FdbEntry("02:00:00:00:00:02", 7, 2, 0, 2)],
                                                                         True)


def test_request_asks_for_the_bridges_ports():
    req = fdbdump.request(9)
    length, kind, flags, seq, _ = NLMSGHDR.unpack_from(req)
    assert length == len(req) and kind == fdbdump.RTM_GETNEIGH and flags & fdbdump.NLM_F_DUMP and seq == 1
    assert req.endswith(RTATTR.pack(8, fdbdump.IFLA_MASTER) + struct.pack("=I", 9))


def test_one_ports_dump_names_the_port_in_the_ifinfomsg():
    req = fdbdump.request(0, port=12)
    _family, _type, index, _flags, _change = fdbdump.IFINFOMSG.unpack_from(req, NLMSGHDR.size)
    assert index == 12 and fdbdump.IFINFOMSG.unpack_from(fdbdump.request(9), NLMSGHDR.size)[2] == 0


def test_a_vxlan_entrys_remote_and_vlan_are_read_and_odd_sizes_ignored():
    def with_attrs(*attrs: bytes) -> bytes:
        body = NDMSG.pack(socket.AF_BRIDGE, 4, 128, 2, 0) + attr(NDA_LLADDR, bytes(6)) + b"".join(attrs)
        return NLMSGHDR.pack(NLMSGHDR.size + len(body), 28, 2, 1, 0) + body
    v4 = with_attrs(attr(fdbdump.NDA_DST, socket.inet_aton("192.0.2.7")), attr(fdbdump.NDA_VLAN, struct.pack("=H", 10)))
    v6 = with_attrs(attr(fdbdump.NDA_DST, socket.inet_pton(socket.AF_INET6, "2001:db8::7")))
    odd = with_attrs(attr(fdbdump.NDA_DST, b"\x01\x02\x03"), attr(fdbdump.NDA_VLAN, b"\x01"))
    entries, done = fdbdump.parse(v4 + v6 + odd)
    assert not done and [(e.dst, e.vlan) for e in entries] == [("192.0.2.7", 10), ("2001:db8::7", 0), ("", 0)]


def test_the_kernels_error_is_raised():
    err = NLMSGHDR.pack(NLMSGHDR.size + 4, NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -22)
    with pytest.raises(OSError):
        fdbdump.parse(err)


@pytest.mark.parametrize("buf", [
    neigh("02:00:00:00:00:01", 5, 2)[:-3],                                   # truncated
    NLMSGHDR.pack(4, 28, 2, 1, 0),                                            # length below the header
    NLMSGHDR.pack(NLMSGHDR.size + 4, 28, 2, 1, 0) + bytes(4),                 # shorter than its ndmsg
    NLMSGHDR.pack(NLMSGHDR.size + NDMSG.size + 4, 28, 2, 1, 0) + bytes(NDMSG.size) + RTATTR.pack(64, NDA_LLADDR),
    NLMSGHDR.pack(NLMSGHDR.size + NDMSG.size + 4, 28, 2, 1, 0) + bytes(NDMSG.size) + RTATTR.pack(2, NDA_LLADDR),
    neigh("02:00:00:00:00:01", 5, 2, seq=7),                                  # another request's answer
])
def test_malformed_replies_are_refused(buf):
    with pytest.raises(ValueError):
        fdbdump.parse(buf)


def test_odd_sized_attributes_are_ignored_not_misread():
    body = NDMSG.pack(socket.AF_BRIDGE, 5, 2, 0, 0) + attr(NDA_LLADDR, b"\x02\x00") + attr(NDA_MASTER, b"\x01")
    assert fdbdump.parse(NLMSGHDR.pack(NLMSGHDR.size + len(body), 28, 2, 1, 0) + body) == ([], False)
