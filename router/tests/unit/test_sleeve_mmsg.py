"""recvmmsg through ctypes: batches with their sources, nothing waiting = empty, a closed socket = OSError;
UDP GRO trains whole with their segment size."""

import socket

import pytest

from weavenet.datapath import mmsg

pytestmark = pytest.mark.skipif(not mmsg.Receiver.available, reason="libc without recvmmsg")


def test_batches_keep_order_sizes_and_sources():
    rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx_sock.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.2", 0))
    try:
        rx = mmsg.Receiver(rx_sock, batch=4, bufsize=2048)
        assert rx.recv() == []
        sent = [bytes([i]) * (100 * i + 1) for i in range(6)] + [b""]
        for d in sent:
            tx.sendto(d, rx_sock.getsockname())
        got = []
        while len(got) < len(sent):
            batch = rx.recv()
            assert len(batch) <= 4
            got += batch
        assert [d for d, _, _ in got] == sent and {ip for _, ip, _ in got} == {"127.0.0.2"}
        rx_sock.close()
        with pytest.raises(OSError):
            rx.recv()
    finally:
        tx.close()
        rx_sock.close()


def test_udp_gro_trains_come_whole_with_their_segment_size():
    rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx_sock.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx = mmsg.Receiver(rx_sock, batch=4)
        if not rx.gro:
            pytest.skip("kernel without UDP_GRO")
        parts = [bytes([i]) * 500 for i in range(5)] + [b"\x09" * 123]
        # One UDP GSO send: loopback hands the whole train to the GRO socket in one message.
        tx.sendmsg([b"".join(parts)], [(17, 103, (500).to_bytes(2, "little"))], 0, rx_sock.getsockname())
        tx.sendto(b"alone", rx_sock.getsockname())
        got = []
        while len(got) < 2:
            got += rx.recv()
        assert got == [(b"".join(parts), "127.0.0.1", 500), (b"alone", "127.0.0.1", 0)]
    finally:
        tx.close()
        rx_sock.close()
