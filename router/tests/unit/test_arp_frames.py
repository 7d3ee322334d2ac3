import struct

from weavenet.net.arp import gratuitous_arp_frame, probe_frame, reply_sender

MAC = "02:00:00:00:00:01"


def test_probe_asks_with_zero_sender_address():
    f = probe_frame(MAC, "10.0.0.7")
    assert f[:6] == b"\xff" * 6 and f[6:12] == bytes.fromhex("020000000001") and f[12:14] == b"\x08\x06"
    op, = struct.unpack_from("!H", f, 20)
    assert op == 1 and f[28:32] == b"\0\0\0\0" and f[38:42] == bytes([10, 0, 0, 7]) and len(f) == 60


def _reply(spa: bytes, sha: bytes, op: int = 2) -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, spa, b"\x02" + b"\0" * 5, b"\0" * 4)
    return b"\x02" + b"\0" * 5 + sha + b"\x08\x06" + arp


def test_reply_sender_reads_replies_only():
    sha = bytes.fromhex("0a0b0c0d0e0f")
    assert reply_sender(_reply(bytes([10, 0, 0, 7]), sha)) == ("10.0.0.7", "0a:0b:0c:0d:0e:0f")
    assert reply_sender(_reply(bytes([10, 0, 0, 7]), sha, op=1)) is None   # a request is no answer
    assert reply_sender(gratuitous_arp_frame(MAC, "10.0.0.7")) is None
    assert reply_sender(b"\0" * 20) is None
