"""ICMP "fragmentation needed", IPv4 fragmentation and checksum completion for frames above the overlay
MTU (datapath/icmp.py), including hostile frames; and the engine answering a real oversize frame."""

import os
import struct

import pytest

from weavenet.datapath import icmp

SRC_MAC, DST_MAC = bytes.fromhex("0a0000000001"), bytes.fromhex("0a0000000002")
SRC_IP, DST_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def ipv4(payload: bytes, proto: int = 17, df: bool = True, frag: int = 0, src: bytes = SRC_IP, dst: bytes = DST_IP,
         dst_mac: bytes = DST_MAC) -> bytes:
    head = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x1234, (icmp.DF if df else 0) | frag,
                                 64, proto, 0, src, dst))
    head[10:12] = icmp.checksum(bytes(head)).to_bytes(2, "big")
    return dst_mac + SRC_MAC + b"\x08\x00" + bytes(head) + payload


def test_frag_needed_answers_the_sender_with_the_mtu_and_a_quote():
    frame = ipv4(os.urandom(3000))
    reply = icmp.frag_needed(frame, 1376)
    assert reply[:6] == SRC_MAC and reply[6:12] == DST_MAC and reply[12:14] == b"\x08\x00"
    ip = reply[14:34]
    assert icmp.checksum(ip) == 0 and ip[9] == 1 and ip[12:16] == DST_IP and ip[16:20] == SRC_IP
    body = reply[34:]
    assert icmp.checksum(body) == 0
    assert body[0] == 3 and body[1] == 4 and int.from_bytes(body[6:8], "big") == 1376
    assert body[8:28] == frame[14:34]               # the offending header quoted
    assert len(reply) - 14 <= 576


@pytest.mark.parametrize("frame", [
    ipv4(b"x" * 100, frag=10),                               # a non-first fragment
    ipv4(bytes([3, 4]) + b"x" * 100, proto=1),               # an ICMP error: never answered with one
    ipv4(b"x" * 100, dst=bytes([224, 0, 0, 1])),             # multicast destination
    ipv4(b"x" * 100, src=bytes(4)),                          # unspecified source
    ipv4(b"x" * 100, dst_mac=b"\xff" * 6),                   # broadcast frame
    b"\x00" * 13,                                            # runt
    ipv4(b"x" * 100)[:30],                                   # truncated header
    DST_MAC + SRC_MAC + b"\x86\xdd" + bytes(60),             # not IPv4
])
def test_no_icmp_for_frames_that_must_not_get_one(frame):
    assert icmp.frag_needed(frame, 1376) is None


def test_lying_total_length_and_header_length_are_refused():
    frame = bytearray(ipv4(b"x" * 100))
    frame[16:18] = (5000).to_bytes(2, "big")                 # claims more than the frame holds
    assert icmp.frag_needed(bytes(frame), 1376) is None and icmp.fragment(bytes(frame), 576) is None
    frame = bytearray(ipv4(b"x" * 100))
    frame[14] = 0x43                                         # IHL 12 bytes
    assert icmp.dont_fragment(bytes(frame)) is None
    assert icmp.frag_needed(ipv4(b"x" * 100), 10) is None    # an MTU no IPv4 link has


def test_fragment_cuts_on_8_byte_boundaries_and_the_pieces_add_up():
    payload = os.urandom(5000)
    frags = icmp.fragment(ipv4(payload, df=False), 1376)
    assert len(frags) == 4
    got = b""
    for i, f in enumerate(frags):
        head = f[14:34]
        assert icmp.checksum(head) == 0 and len(f) - 14 <= 1376
        flags = int.from_bytes(head[6:8], "big")
        assert (flags & 0x1FFF) * 8 == len(got)
        assert bool(flags & icmp.MF) == (i < len(frags) - 1)
        assert int.from_bytes(head[2:4], "big") == len(f) - 14
        got += f[34:]
    assert got == payload
    assert icmp.fragment(ipv4(payload, df=True), 1376) is None      # DF: never cut


def test_gso_segment_and_checksum_completion():
    tcp = bytearray(20)
    tcp[12] = 0x80                                              # 32-byte TCP header
    frame = ipv4(bytes(tcp) + bytes(12) + os.urandom(3000), proto=6)
    assert icmp.gso_segment(frame, 1324) == 20 + 32 + 1324
    assert icmp.gso_segment(b"\x00" * 20, 1000) is None
    udp = ipv4(struct.pack(">HHHH", 1, 2, 8 + 100, 0) + os.urandom(100), df=False)
    done = icmp.complete_checksum(udp, 34, 6)
    assert done is not None and icmp.checksum(done[34:]) in (0, 0xFFFF) and done[:40] == udp[:40]
    assert icmp.complete_checksum(udp, 34, 5000) is None and icmp.complete_checksum(udp, 2, 0) is None
