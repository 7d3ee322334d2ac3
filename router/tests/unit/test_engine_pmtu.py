"""The real sleeve Engine (socketpair TAP, UDP on 127.0.0.1) with path-MTU probes, fragments and frames
above the overlay MTU: probes answered and believed only when they match, fragments out within the path
MTU and back together on the way in, ICMP "fragmentation needed" back to the TAP."""

import os
import socket
import struct
import time

import pytest

from weavenet.datapath import icmp, pmtu, sleeve

from .test_datapath_engine import KEY, LANES, LOCAL_MAC, REMOTE_MAC, Rig, frame, lane_id, wait

B_MAC = REMOTE_MAC


@pytest.fixture(params=[(key, lane) for key in (None, KEY) for lane in LANES],
                ids=lambda p: f"{'plain' if p[0] is None else 'encrypted'}-{lane_id(p[1])}")
def rig(request):
    r = Rig(request.param[0], mtu=1376, ceiling=1500, lane=request.param[1])   # a 1500-byte route (not lo's 65536)
    yield r
    r.close()


def next_probe(rig) -> bytes:
    while True:
        dg = rig.peer.recv(70000)
        if sleeve.peek(dg)[2] & sleeve.F_PROBE and dg[sleeve.HEADER.size] == sleeve.PROBE:
            return dg


def test_probes_raise_the_path_mtu_only_when_answered_right(rig):
    assert rig.link.pmtu == pmtu.FLOOR
    probe = next_probe(rig)
    _, seq, _ = sleeve.peek(probe)
    # A forged echo: right nonce, a size that was not sent. Then one with an unknown nonce. Neither counts.
    rig.send(sleeve.echo(sleeve.name_bytes(rig.link.name), seq, 60000))
    rig.send(sleeve.echo(sleeve.name_bytes(rig.link.name), seq + 1, len(probe) + 28))
    assert wait(lambda: rig.eng.drops["probe_unmatched"] == 2), dict(rig.eng.drops)
    assert rig.link.pmtu == pmtu.FLOOR
    # Answer every probe as a path of 1000 bytes would (drop the bigger ones): the engine settles there.
    deadline = 40
    while not (1000 - pmtu.STEP < rig.link.pmtu <= 1000) and deadline:
        deadline -= 1
        try:
            dg = next_probe(rig)
        except TimeoutError:
            continue
        if len(dg) + 28 <= 1000:
            rig.send(sleeve.echo(sleeve.name_bytes(rig.link.name), sleeve.peek(dg)[1], len(dg) + 28))
    assert 1000 - pmtu.STEP < rig.link.pmtu <= 1000
    assert rig.eng.pmtus() == {rig.link.name: rig.link.pmtu}


def answer_probes(rig, seconds: float, path: int = 1000) -> int:
    """Answer, for `seconds`, the engine's probes as a path of `path` bytes would; returns how many came."""
    came, end = 0, time.monotonic() + seconds
    rig.peer.settimeout(0.1)
    while time.monotonic() < end:
        try:
            dg = rig.peer.recv(70000)
        except TimeoutError:
            continue
        if sleeve.peek(dg)[2] & sleeve.F_PROBE and dg[sleeve.HEADER.size] == sleeve.PROBE:
            came += 1
            if len(dg) + 28 <= path:
                rig.send(sleeve.echo(sleeve.name_bytes(rig.link.name), sleeve.peek(dg)[1], len(dg) + 28))
    return came


def test_an_idle_link_is_not_probed_until_traffic_resumes(rig, monkeypatch):
    """Once settled, the size in use is confirmed only on a link that carried frames since the last look:
    idle links (and fast-path ones) cost no probes; traffic brings the confirmation back."""
    monkeypatch.setattr(pmtu, "CONFIRM_EVERY", 0.3)
    rig.eng.poke_prober()
    answer_probes(rig, 1.0)
    # The search takes about four rounds of ROUND_TIMEOUT (its biggest probes are never answered): answered
    # until it ends, not for a fixed 4 s, which a loaded machine overran by milliseconds.
    deadline = time.monotonic() + 8.0
    while rig.link.prober.searching and time.monotonic() < deadline:
        answer_probes(rig, 0.2)
    assert 1000 - pmtu.STEP < rig.link.pmtu <= 1000 and not rig.link.prober.searching
    answer_probes(rig, 0.5)                     # the first confirmation after the search
    assert answer_probes(rig, 2.0) == 0         # ~6 periods, nothing sent on the link: no probe
    rig.tap.send(frame(b"\xff" * 6, LOCAL_MAC, os.urandom(100)))
    assert answer_probes(rig, 1.0) >= 1          # traffic: confirmed again within a period
    assert 1000 - pmtu.STEP < rig.link.pmtu <= 1000


def test_the_engine_echoes_a_probe_with_its_size(rig):
    nonce = os.urandom(8)
    rig.send(sleeve.probe(sleeve.name_bytes(rig.link.name), nonce, 900))
    while True:
        dg = rig.peer.recv(70000)
        if dg[sleeve.HEADER.size] == sleeve.ECHO:
            break
    _, seq, flags = sleeve.peek(dg)
    assert flags & sleeve.F_PROBE and seq.to_bytes(8, "big") == nonce
    assert sleeve.ECHO_BODY.unpack_from(dg, sleeve.HEADER.size) == (sleeve.ECHO, 928)


def test_big_frames_go_out_as_fragments_within_the_path_mtu_and_come_back_whole(rig):
    big = frame(b"\xff" * 6, LOCAL_MAC, os.urandom(1300))
    rig.tap.send(big)
    parts = []
    while True:
        dg = rig.recv_data()
        assert len(dg) + 28 <= rig.link.pmtu
        _, seq, flags = sleeve.peek(dg)
        assert flags & sleeve.F_FRAG
        parts.append(dg)
        if len(parts) == dg[sleeve.HEADER.size + 1]:
            break
    from weavenet.datapath.reassembly import Reassembler
    r = Reassembler()
    whole = [r.add(p, seq, 0.0) for p in parts][-1]
    assert sleeve.decode_body(whole, seq, rig.key)[3] == [big]
    # The other way: a fragmented datagram from the peer is put together and delivered.
    f = frame(LOCAL_MAC, B_MAC, os.urandom(3000))
    for part in sleeve.fragment(rig.valid([f]), 600):
        rig.send(part)
    assert rig.delivered() == f
    # A lost fragment: nothing delivered, nothing half-done; the next datagram still is.
    parts = sleeve.fragment(rig.valid([frame(LOCAL_MAC, B_MAC, bytes(3000))]), 600)
    for part in parts[1:]:
        rig.send(part)
    rig.assert_alive_and_delivering()


def ipv4_frame(size: int, df: bool) -> bytes:
    head = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, size, 1, icmp.DF if df else 0, 64, 17, 0,
                                 bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    head[10:12] = icmp.checksum(bytes(head)).to_bytes(2, "big")
    return B_MAC + LOCAL_MAC + b"\x08\x00" + bytes(head) + bytes(size - 20)


def test_frame_above_the_overlay_mtu_gets_icmp_or_is_cut(rig):
    rig.tap.send(ipv4_frame(3000, df=True))
    reply = rig.tap.recv(70000)
    assert reply[:6] == LOCAL_MAC and reply[34] == 3 and reply[35] == 4
    assert int.from_bytes(reply[40:42], "big") == 1376
    assert wait(lambda: rig.eng.drops["frag_needed"] == 1)
    rig.tap.send(ipv4_frame(3000, df=False))      # no DF: cut into IP fragments of at most 1376 bytes
    wait(lambda: rig.eng.drops["fragmented"] == 1)
    rig.tap.send(b"\xff" * 6 + LOCAL_MAC + b"\x86\xdd" + bytes(3000))   # IPv6, too big: dropped, counted
    assert wait(lambda: rig.eng.drops["too_big"] == 1)
    assert all(t.is_alive() for t in rig.eng._threads.values())


def test_send_failing_with_emsgsize_makes_the_prober_look_again(rig, monkeypatch):
    calls = []
    monkeypatch.setattr("weavenet.datapath.engine.route_mtu", lambda ip, port: calls.append(ip) or 800)
    rig.link.too_big = True          # as _send does on EMSGSIZE: flag, then wake the prober's thread
    rig.eng.poke_prober()
    assert wait(lambda: calls and rig.link.prober.ceiling == 800)
    assert rig.link.pmtu <= 800


def test_unknown_flags_are_malformed(rig):
    dg = bytearray(rig.valid([frame(LOCAL_MAC, B_MAC)]))
    dg[1] |= 0x80
    rig.send(bytes(dg))
    assert wait(lambda: rig.eng.drops["malformed"] == 1)
    rig.assert_alive_and_delivering()


def test_probe_socket_option_is_df_without_the_kernel_pmtu_cache(rig):
    assert rig.eng.sock.getsockopt(socket.IPPROTO_IP, 10) == 3   # IP_MTU_DISCOVER = IP_PMTUDISC_PROBE


class NoGsoSocket(socket.socket):
    """A kernel that refuses UDP GSO (e.g. no checksum offload on the way out)."""

    def sendmsg(self, *args, **kwargs):
        raise OSError(5, "Input/output error")   # EIO


def test_without_udp_gso_fragments_go_one_per_call(rig):
    real = rig.eng.sock
    if rig.eng.lane:      # the lane sends on the socket's descriptor: there, GSO is switched off as it would be
        rig.eng._lane.gso = False
    else:
        rig.eng.sock = NoGsoSocket(socket.AF_INET, socket.SOCK_DGRAM, fileno=os.dup(real.fileno()))
    try:
        rig.tap.send(frame(b"\xff" * 6, LOCAL_MAC, os.urandom(1300)))   # within the overlay MTU, above the PMTU
        parts = []
        while not parts or len(parts) < parts[-1][sleeve.HEADER.size + 1]:
            try:
                parts.append(rig.recv_data())
            except TimeoutError:
                raise AssertionError(dict(rig.eng.drops)) from None
        assert all(len(p) + 28 <= rig.link.pmtu for p in parts)
        assert rig.eng.drops["send_error"] == 0
        if not rig.eng.lane:
            assert not rig.eng.gso and rig.eng.drops["gso_off"] == 1
    finally:
        if rig.eng.sock is not real:
            rig.eng.sock.close()
        rig.eng.sock = real


def test_a_gro_train_of_fragments_is_delivered_whole(rig):
    # The peer sends the fragments of one datagram in one UDP GSO call: loopback hands the engine's GRO
    # socket the whole train, which comes out put together and delivered once.
    f = frame(LOCAL_MAC, B_MAC, os.urandom(4000))
    buf, count = sleeve.fragments_joined(rig.valid([f]), 600)
    rig.peer.sendmsg([buf], [(17, 103, (600).to_bytes(2, "little"))], 0, ("127.0.0.1", rig.eng.port))
    assert rig.delivered() == f
    assert rig.delivered() is None
    rig.assert_alive_and_delivering()


def test_unfinished_fragmented_datagrams_are_counted(rig):
    parts = sleeve.fragment(rig.valid([frame(LOCAL_MAC, B_MAC, bytes(3000))]), 600)
    for seq in range(20):   # more unfinished datagrams than the reassembly keeps: the oldest are given up
        head = bytearray(parts[0])
        head[8:16] = (10**6 + seq).to_bytes(8, "big")
        rig.send(bytes(head))
    assert wait(lambda: rig.eng.drops["frag_incomplete"] >= 20 - 8), dict(rig.eng.drops)
    rig.assert_alive_and_delivering()


def test_the_receive_thread_runs_the_probers_when_due_not_on_a_tick(monkeypatch):
    """An idle router with many peers must not wake ten times a second to run their probers: the receive
    thread sleeps until the earliest prober is due (here: a peer that never answers, a round per second
    at most), and a poke (new links, EMSGSIZE) runs them at once."""
    from weavenet.datapath.engine import Engine
    calls = []
    real = Engine._probe_tick
    monkeypatch.setattr(Engine, "_probe_tick", lambda self, now, st: calls.append(now) or real(self, now, st))
    r = Rig(None, mtu=1376, ceiling=1500)
    try:
        assert wait(lambda: len(calls) >= 1)
        start = len(calls)
        time.sleep(0.8)
        assert len(calls) - start <= 2, calls          # was 8 with a 0.1 s tick
        due = r.link.prober.due()
        assert due > calls[-1]                          # the next run is the prober's own deadline
        n = len(calls)
        r.eng.poke_prober()
        assert wait(lambda: len(calls) > n, timeout=0.5)
    finally:
        r.close()


def test_without_recvmmsg_the_engine_receives_one_datagram_per_recvfrom(monkeypatch):
    """libc without recvmmsg: the receive thread polls and reads with recvfrom; fragments still reassemble."""
    from weavenet.datapath import mmsg
    monkeypatch.setattr(mmsg.Receiver, "available", False)
    r = Rig(KEY, mtu=1376, ceiling=1500)
    try:
        r.assert_alive_and_delivering()
        f = frame(LOCAL_MAC, B_MAC, os.urandom(3000))
        for part in sleeve.fragment(r.valid([f]), 600):
            r.send(part)
        assert r.delivered() == f
    finally:
        r.close()


def test_a_wake_up_runs_only_the_probers_that_are_due(monkeypatch):
    """With many links, the receive thread's wake-ups touch the probers that are due, not every link (each
    wake looking at all N links, with wakes that grow with N, cost an idle router O(N^2))."""
    from weavenet.datapath.engine import Engine, PeerLink, View
    from weavenet.datapath.macs import MacTable
    from weavenet.mesh.routes import RouteTable

    from .test_datapath_engine import A
    ticked = []
    real_tick = pmtu.Prober.tick
    monkeypatch.setattr(pmtu.Prober, "tick", lambda self, now: ticked.append(self) or real_tick(self, now))
    tap, tap_engine = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    eng = Engine(A, tap_engine.fileno(), 0, MacTable(local=A), vnet_hdr=False, bind="127.0.0.1")
    try:
        names = [f"02:00:00:00:01:{i:02x}" for i in range(100)]
        links = {n: PeerLink(n, ("127.0.0.1", 9), None, None, ceiling=1500) for n in names}
        eng.publish(View(A, RouteTable({A: names, **{n: [A] for n in names}}, A), links))
        st = eng._stats["weave-udp-rx"]
        now = time.monotonic()
        first_due = eng._probe_tick(now, st)           # a new view: every prober starts its first round
        assert len(ticked) == 100 and first_due > now
        ticked.clear()
        assert eng._probe_tick(now + 0.5, st) == first_due and ticked == []   # none due: none touched
        late = links[names[7]]
        late.prober.round_ends = now + 0.6             # one prober due earlier than the rest
        eng._probe_schedule(late, now)
        eng._probe_tick(now + 0.7, st)
        assert ticked == [late.prober]
    finally:
        eng.stop()
        tap.close()
        tap_engine.close()
