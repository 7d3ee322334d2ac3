"""weaveDNS over TCP: the pure framing, and the real listener on loopback fed good and hostile streams."""

import asyncio
import contextlib
import random
import socket
import struct
from types import SimpleNamespace

import dns.flags
import dns.message
import dns.rrset
import pytest

from weavenet.mesh.errors import ProtocolError
from weavenet.nameserver.tcp import MAX_TCP_QUERY, Deframer, frame
from weavenet.weaver import dns_service
from weavenet.weaver.dns_service import DnsService, _TcpConn

US = "02:00:00:00:00:01"


def query(name: str = "big.weave.local.", **kw) -> bytes:
    return dns.message.make_query(name, "A", **kw).to_wire()


def test_deframer_reassembles_split_and_pipelined_queries():
    a, b = query(), query("other.weave.local.")
    d = Deframer()
    stream = frame(a) + frame(b)
    got = []
    for i in range(len(stream)):  # one byte at a time
        got += d.feed(stream[i:i + 1])
    assert got == [a, b] and d.pending == 0
    assert Deframer().feed(stream + frame(a)[:5]) == [a, b]


@pytest.mark.parametrize("length", [0, 1, 11, MAX_TCP_QUERY + 1, 65535])
def test_deframer_refuses_lengths_outside_bounds_before_buffering(length):
    d = Deframer()
    with pytest.raises(ProtocolError, match="message length"):
        d.feed(struct.pack(">H", length) + b"x" * 20)
    assert d.pending == 0


def test_frame_refuses_what_two_bytes_cannot_say():
    assert frame(b"abc") == b"\x00\x03abc"
    with pytest.raises(ValueError):
        frame(b"x" * 65536)


def service() -> DnsService:
    mesh = SimpleNamespace(identity=SimpleNamespace(name=US), topology=SimpleNamespace(ourself=SimpleNamespace(
        incarnation=1)))
    svc = DnsService(mesh, "weave.local", 1, [], "none")  # type: ignore[arg-type]
    for i in range(50):
        svc.store.add("big", f"10.32.0.{i + 1}", f"c{i}", 0)
    return svc


async def serve(svc: DnsService, sndbuf: int = 0) -> tuple[asyncio.Server, int]:
    sock = socket.socket()
    if sndbuf:  # accepted sockets inherit it: the kernel then buffers little of what a client does not read
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    server = await asyncio.get_running_loop().create_server(lambda: _TcpConn(svc), sock=sock)
    return server, sock.getsockname()[1]


async def read_msg(reader: asyncio.StreamReader) -> dns.message.Message:
    (n,) = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), 5))
    return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(n), 5))


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1 << 20), 5) == b""
    except ConnectionError:
        return True


def test_all_50_records_over_tcp_pipelined_while_udp_answers_are_truncated():
    svc = service()

    async def run():
        server, port = await serve(svc)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(frame(query()) + frame(query(use_edns=0, payload=700)) + frame(query("nope.weave.local.")))
        msgs = [await read_msg(r) for _ in range(3)]
        w.close()
        server.close()
        return msgs

    msgs = asyncio.run(run())
    full = [m for m in msgs if m.answer]
    assert len(full) == 2 and all(len(m.answer[0]) == 50 and not m.flags & dns.flags.TC for m in full)
    assert any(m.rcode() == 3 for m in msgs)  # NXDOMAIN for the unknown name
    assert svc.counters["tcp_answered"] == 3 and svc.counters["truncated"] == 0


def test_udp_path_sets_tc_when_trimmed():
    svc = service()
    sent: list[bytes] = []
    svc._send = lambda data, addr: sent.append(data)  # type: ignore[method-assign]

    async def run():
        svc.query(query(), ("10.32.0.99", 5353))
        svc.query(query(use_edns=0, payload=4096), ("10.32.0.99", 5353))

    asyncio.run(run())
    small, big = (dns.message.from_wire(x) for x in sent)
    assert small.flags & dns.flags.TC and 20 < len(small.answer[0]) < 50
    assert not big.flags & dns.flags.TC and len(big.answer[0]) == 50
    assert svc.counters["truncated"] == 1 and svc.counters["answered"] == 2


@pytest.mark.parametrize("garbage", [b"\x00\x00", b"\x00\x05hello", struct.pack(">H", MAX_TCP_QUERY + 1) + b"x" * 100])
def test_bad_framing_drops_the_connection_and_counts(garbage):
    svc = service()

    async def run():
        server, port = await serve(svc)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(garbage)
        gone = await closed(r)
        server.close()
        return gone

    assert asyncio.run(run())
    assert svc.counters["tcp_dropped"] == 1 and not svc._tcp_conns


def test_garbage_inside_a_good_frame_gets_formerr_and_the_connection_lives():
    svc = service()

    async def run():
        server, port = await serve(svc)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(frame(b"\x12\x34" + bytes(random.Random(3).randbytes(30))) + frame(query()))
        (n,) = struct.unpack(">H", await r.readexactly(2))
        first = await r.readexactly(n)
        second = await read_msg(r)
        w.close()
        server.close()
        return first, second

    first, second = asyncio.run(run())
    assert first[:2] == b"\x12\x34" and first[3] & 0x0F == 1  # FORMERR
    assert len(second.answer[0]) == 50


def test_idle_and_byte_at_a_time_clients_are_closed(monkeypatch):
    monkeypatch.setattr(dns_service, "TCP_IDLE_TIMEOUT", 0.3)
    svc = service()

    async def run():
        server, port = await serve(svc)
        r1, _ = await asyncio.open_connection("127.0.0.1", port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        q = frame(query())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(len(q) - 1):  # never completes a query: bytes alone do not keep it open
            try:
                w2.write(q[i:i + 1])
            except ConnectionError:
                break
            await asyncio.sleep(0.05)
        gone = await closed(r1), await closed(r2)
        server.close()
        return gone, loop.time() - t0

    (g1, g2), took = asyncio.run(run())
    assert g1 and g2 and took < 3 and not svc._tcp_conns


def test_connections_over_the_limit_are_closed_at_once(monkeypatch):
    monkeypatch.setattr(dns_service, "MAX_TCP_CONNECTIONS", 2)
    svc = service()

    async def run():
        server, port = await serve(svc)
        keep = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        r3, _ = await asyncio.open_connection("127.0.0.1", port)
        third_gone = await closed(r3)
        r, w = keep[0]
        w.write(frame(query()))   # the ones inside the limit still work
        ok = len((await read_msg(r)).answer[0]) == 50
        for _, w in keep:
            w.close()
        server.close()
        return third_gone, ok

    assert asyncio.run(run()) == (True, True)
    assert svc.counters["tcp_refused"] == 1


def test_a_client_that_never_reads_is_dropped_not_buffered(monkeypatch):
    monkeypatch.setattr(dns_service, "MAX_TCP_BUFFERED", 1024)
    svc = service()

    async def run():
        server, port = await serve(svc, sndbuf=4096)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before connecting: a small window
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        q = frame(query()) * 200   # ~170 KB of answers asked, none read: more than the kernel buffers
        sent = 0
        for _ in range(200):
            with contextlib.suppress(BlockingIOError, ConnectionError):
                sent += s.send(q[sent:])
            await asyncio.sleep(0.01)
            if svc.counters["tcp_dropped"] or sent >= len(q):
                break
        for _ in range(100):
            if svc.counters["tcp_dropped"]:
                break
            await asyncio.sleep(0.02)
        s.close()
        server.close()

    asyncio.run(run())
    assert svc.counters["tcp_dropped"] == 1 and not svc._tcp_conns


def test_names_outside_the_domain_are_forwarded_and_relayed_over_tcp():
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind(("127.0.0.1", 0))
    upstream.setblocking(False)
    svc = service()
    svc._upstream, svc._upstream_port = ["127.0.0.1"], upstream.getsockname()[1]

    async def answer_once() -> None:   # the upstream: one A record for whatever it is asked
        loop = asyncio.get_running_loop()
        data, addr = await loop.sock_recvfrom(upstream, 4096)
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 30, "IN", "A", "192.0.2.99"))
        await loop.sock_sendto(upstream, r.to_wire(), addr)

    async def run():
        server, port = await serve(svc)
        task = asyncio.create_task(answer_once())
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(frame(query("example.com.")))
        msg = await read_msg(r)
        await task
        w.close()
        server.close()
        return msg

    msg = asyncio.run(run())
    upstream.close()
    assert [x.address for x in msg.answer[0]] == ["192.0.2.99"] and svc.counters["forwarded"] == 1
