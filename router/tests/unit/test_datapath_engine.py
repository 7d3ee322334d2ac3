"""The real sleeve Engine fed hostile datagrams, without root: a SEQPACKET socketpair stands in for the
TAP and the UDP socket listens on 127.0.0.1 (ephemeral port). After every bad input the receive
thread must still be alive, the drop counted, and a valid datagram sent afterwards delivered."""

import logging
import os
import socket
import threading
import time

import pytest

from weavenet.api import format as fmt
from weavenet.datapath import lane as clane
from weavenet.datapath import sleeve
from weavenet.datapath.engine import Engine, PeerLink, View
from weavenet.datapath.forward import Forwarder
from weavenet.datapath.macs import MacTable
from weavenet.mesh.routes import RouteTable
from weavenet.weaver import dataplane as dpmod
from weavenet.weaver.dataplane import Dataplane, DataplaneConfig

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
KEY = bytes(range(32))
LOCAL_MAC = bytes.fromhex("0a0000000001")
REMOTE_MAC = bytes.fromhex("0a00000000b1")


# Every rig test runs the engine both ways: all in Python, and with the C lane (lane.py), which must treat
# every hostile input the same. test_lane.py checks that the lane is built wherever these tests run.
LANES = [False, True] if clane.AVAILABLE else [False]


def lane_id(lane: bool) -> str:
    return "lane" if lane else "python"


def frame(dst: bytes, src: bytes, payload: bytes = b"x" * 46) -> bytes:
    return dst + src + b"\x08\x00" + payload


def wait(cond, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


class Rig:
    def __init__(self, key: bytes | None, cap: int = 8192, mtu: int = 0, ceiling: int = 0,
                 aegis: bool = False, lane: bool = False) -> None:
        self.tap, self.tap_engine = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.tap.settimeout(1.0)
        self.macs = MacTable(local=A, cap=cap)
        self.eng = Engine(A, self.tap_engine.fileno(), 0, self.macs, vnet_hdr=False, bind="127.0.0.1", mtu=mtu,
                          lane=lane)
        assert self.eng.lane == lane
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # peer B's sleeve socket
        self.peer.bind(("127.0.0.1", 0))
        self.peer.settimeout(1.0)
        self.key = key
        self.aegis = aegis                  # both ends offered AEGIS-256: peer B seals with the derived key
        self.seal_key = sleeve.aegis_key(key) if aegis else key
        self.link = PeerLink(B, ("127.0.0.1", self.peer.getsockname()[1]), key, key, ceiling=ceiling, aegis=aegis)
        self.routes = RouteTable({A: [B], B: [A]}, A)
        self.eng.publish(View(A, self.routes, {B: self.link}))
        self.seq = 100
        self.eng.start()

    def send(self, dg: bytes, src: str = "127.0.0.1") -> None:
        s = self.peer if src == "127.0.0.1" else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if s is not self.peer:
            s.bind((src, 0))
        s.sendto(dg, ("127.0.0.1", self.eng.port))

    def valid(self, frames: list[bytes], origin: str = B, dest: str = A) -> bytes:
        self.seq += 1
        return sleeve.encode(sleeve.name_bytes(B), self.seq, sleeve.name_bytes(origin), sleeve.name_bytes(dest),
                             frames, self.seal_key, aegis=self.aegis)

    def recv_data(self) -> bytes:
        """The next datagram the engine sent to peer B that is not a path-MTU probe."""
        while True:
            dg = self.peer.recv(70000)
            if not sleeve.peek(dg)[2] & sleeve.F_PROBE:
                return dg

    def delivered(self) -> bytes | None:
        try:
            return self.tap.recv(70000)
        except TimeoutError:
            return None

    def assert_alive_and_delivering(self) -> None:
        assert all(t.is_alive() for t in self.eng._threads.values())
        f = frame(LOCAL_MAC, REMOTE_MAC, os.urandom(46))
        self.send(self.valid([f]))
        assert self.delivered() == f

    def close(self) -> None:
        self.eng.stop()
        for s in (self.tap, self.tap_engine, self.peer):
            s.close()


@pytest.fixture(params=[(mode, lane) for mode in (None, KEY, "aegis") for lane in LANES],
                ids=lambda p: f"{'plain' if p[0] is None else 'aegis' if p[0] == 'aegis' else 'encrypted'}-"
                              f"{lane_id(p[1])}")
def rig(request):
    mode, lane = request.param
    r = Rig(KEY, aegis=True, lane=lane) if mode == "aegis" else Rig(mode, lane=lane)
    yield r
    r.close()


def test_forged_30_byte_encrypted_datagram_is_counted_and_thread_survives():
    r = Rig(KEY)
    try:
        forged = sleeve.HEADER.pack(sleeve.MAGIC, sleeve.F_ENCRYPTED, sleeve.name_bytes(B), 7) + b"\x00" * 14
        assert len(forged) == 30
        r.send(forged)
        assert wait(lambda: r.eng.drops["malformed"] == 1)
        r.assert_alive_and_delivering()
        assert r.eng.drops["internal"] == 0
    finally:
        r.close()


@pytest.mark.parametrize("bad, reason", [
    (b"", "malformed"),
    (b"\x00" + os.urandom(99), "malformed"),
    (b"GET / HTTP/1.1\r\n\r\n" * 4, "malformed"),
    (sleeve.HEADER.pack(sleeve.MAGIC, 0, sleeve.name_bytes(C), 1) + b"\x00" * 40, "unknown_peer"),
])
def test_garbage_is_counted(rig, bad, reason):
    rig.send(bad)
    assert wait(lambda: rig.eng.drops[reason] >= 1), dict(rig.eng.drops)
    rig.assert_alive_and_delivering()


def test_truncated_and_oversized(rig):
    good = rig.valid([frame(LOCAL_MAC, REMOTE_MAC, b"y" * 1000)])
    rig.send(good[:-7])
    want = "auth" if rig.key else "malformed"
    assert wait(lambda: rig.eng.drops[want] == 1), dict(rig.eng.drops)
    # The largest datagram UDP carries, its frame-length field claiming 4 GiB.
    head = sleeve.HEADER.pack(sleeve.MAGIC, sleeve.F_ENCRYPTED if rig.key else 0, sleeve.name_bytes(B), 10**6)
    big = head + sleeve.BODY_HEAD.pack(sleeve.name_bytes(B), sleeve.name_bytes(A), 0) + b"\xff\xff\xff\xff"
    big += b"\x00" * (sleeve.MAX_DATAGRAM - len(big))
    rig.send(big)
    assert wait(lambda: rig.eng.drops[want] == 2), dict(rig.eng.drops)
    rig.assert_alive_and_delivering()


def test_wrong_source_address_is_dropped(rig):
    f = frame(LOCAL_MAC, REMOTE_MAC)
    rig.send(rig.valid([f]), src="127.0.0.2")  # right peer name and keys, wrong underlay address
    assert wait(lambda: rig.eng.drops["wrong_source"] == 1)
    assert rig.delivered() is None
    rig.assert_alive_and_delivering()


def test_bad_origin_runt_and_multicast_source(rig):
    for origin in (C, A):  # a peer we have no route to; ourselves
        rig.send(rig.valid([frame(LOCAL_MAC, REMOTE_MAC)], origin=origin))
    assert wait(lambda: rig.eng.drops["bad_origin"] == 2)
    assert not rig.routes.cached(C)  # nothing computed or cached for an invented origin
    rig.send(rig.valid([b"\x01" * 5, frame(LOCAL_MAC, b"\x01" + REMOTE_MAC[1:])]))
    assert wait(lambda: rig.eng.drops["runt"] == 1 and rig.eng.drops["bad_src_mac"] == 1)
    assert rig.delivered() is None
    rig.assert_alive_and_delivering()


def test_remote_cannot_take_over_a_local_mac(rig):
    # A local container speaks (its broadcast reaches the TAP and goes to B): its MAC is ours now.
    rig.tap.send(frame(b"\xff" * 6, LOCAL_MAC))
    assert rig.recv_data()
    assert rig.macs.lookup(LOCAL_MAC, time.monotonic()) == A
    rig.send(rig.valid([frame(b"\xff" * 6, LOCAL_MAC)]))
    assert wait(lambda: rig.eng.drops["mac_hijack"] == 1)
    assert rig.delivered() is None
    assert rig.macs.lookup(LOCAL_MAC, time.monotonic()) == A and rig.macs.refused == 1
    rig.assert_alive_and_delivering()


def test_mac_table_is_bounded_through_the_engine():
    r = Rig(None, cap=16)
    try:
        frames = [frame(LOCAL_MAC, b"\x0a" + i.to_bytes(5, "big")) for i in range(60)]
        r.send(r.valid(frames))
        got = [r.delivered() for _ in range(60)]
        assert got == frames
        assert len(r.macs) == 16 and r.macs.evictions == 60 - 16
    finally:
        r.close()


def test_unexpected_exception_is_counted_and_logged_once(rig, caplog):
    class Broken(Forwarder):
        def from_sleeve(self, *a):
            raise RuntimeError("bug")

    rig.eng._fwd = Broken(A, rig.routes, frozenset(), rig.macs)
    with caplog.at_level(logging.WARNING, logger="weavenet.datapath"):
        for _ in range(30):
            rig.send(rig.valid([frame(LOCAL_MAC, REMOTE_MAC)]))
        assert wait(lambda: rig.eng.drops["internal"] == 30), dict(rig.eng.drops)
    assert len([r for r in caplog.records if "internal" in r.getMessage()]) == 1
    rig.eng.publish(View(A, rig.routes, {B: rig.link}))
    rig.assert_alive_and_delivering()


def test_dead_thread_is_noticed_restarted_and_finally_fatal(monkeypatch):
    r = Rig(None)
    dp = Dataplane(DataplaneConfig(), A)
    dp.engine = r.eng
    fd = r.tap_engine.fileno()
    spare, keep = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        assert dp.health(time.monotonic()) == ("healthy", "")
        t0 = time.monotonic()
        r.tap_engine.close()  # the TAP goes away under the thread
        assert wait(lambda: r.eng.dead_threads(), 1.0), "death not noticed within a second"
        assert time.monotonic() - t0 < 1.0
        state, why = dp.health(time.monotonic())
        assert state == "degraded" and "weave-tap-rx dead" in why
        report = {"router": {"connections": [], "peers": [], "targets": [], "name": A, "nickname": "a",
                             "encryption": False, "dataplane": dp.report(time.monotonic())}}
        assert "Datapath: degraded (weave-tap-rx dead" in fmt.status_summary(report)
        # A new device on the same descriptor: the restarted thread works again.
        os.dup2(spare.fileno(), fd)
        dp.check_threads(time.monotonic())
        assert r.eng.restarts["weave-tap-rx"] == 1 and not r.eng.dead_threads()
        assert dp.health(time.monotonic())[0] == "healthy"
        keep.send(frame(b"\xff" * 6, LOCAL_MAC))
        assert r.recv_data()
        # A thread that keeps dying ends the router with a non-zero status.
        with pytest.raises(SystemExit) as e:
            for _ in range(dpmod.MAX_RESTARTS + 1):
                os.close(fd)
                assert wait(lambda: r.eng.dead_threads(), 1.0)
                os.dup2(spare.fileno(), fd)
                dp.check_threads(time.monotonic())
        assert e.value.code == dpmod.EXIT_DATAPATH and dp.health(time.monotonic())[0] == "failed"
    finally:
        r.close()
        os.close(fd)  # the dup2 copy the engine used
        spare.close()
        keep.close()
        dp._netlink.shutdown(wait=False)


def test_encrypted_mesh_turns_fastdp_off_and_says_so():
    dp = Dataplane(DataplaneConfig(fastdp=True, encrypted=True), A)
    try:
        assert not dp.fastdp and dp.uplinks() == ["weave-tap"] and "fastdp" not in dp.features()
        assert dp.fastdp_off == "encryption is on"
        assert "fastdp off: encryption is on" in fmt._datapath({"health": "healthy", "fastdp_off": dp.fastdp_off})
        assert Dataplane(DataplaneConfig(fastdp=True), A).fastdp
    finally:
        dp._netlink.shutdown(wait=False)


def test_mac_table_lru_cap_and_concurrent_learn_expire():
    t = MacTable(ttl=0.5, cap=64)
    stop = threading.Event()
    errors = []

    def learner(base: int) -> None:
        i = 0
        try:
            while not stop.is_set():
                t.learn((base * 10**6 + i % 5000).to_bytes(6, "big"), B, time.monotonic())
                i += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=learner, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        t.expire(time.monotonic() + 0.3)
        t.snapshot(time.monotonic())
        t.forget_peer(C)
    stop.set()
    for th in threads:
        th.join()
    assert not errors and len(t) <= 64 and t.evictions > 0


def test_a_data_plane_that_keeps_dying_ends_the_router_with_status_70_and_one_line(tmp_path, caplog):
    """The real ticker of a Router: the TAP goes away, every restarted thread dies at once, and the router
    stops in order with exit status 70: one critical line, no traceback, no 'Task exception was never
    retrieved' (a SystemExit escaping the ticker task used to leave exactly that)."""
    import asyncio
    import gc

    from weavenet.weaver.app import build_router
    from weavenet.weaver.config import RouterConfig
    from weavenet.weaver.dataplane import Dataplane, DataplaneConfig
    from weavenet.weaver.paths import Paths

    class SetUp(Dataplane):   # the Rig made the TAP and the engine: nothing left to create
        def setup(self) -> None:
            pass

    paths = Paths(tmp_path / "run", tmp_path / "data")
    paths.datadir.mkdir()
    cfg = RouterConfig(fastdp=False, nickname="a", name="02:00:00:00:00:0a", dns=False)
    dataplane = SetUp(DataplaneConfig(fastdp=False), cfg.name)
    r = Rig(None)
    dataplane.engine = r.eng
    router = asyncio.run(build_router(cfg, paths, dataplane=dataplane))

    async def main() -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(router._ticker())
        r.tap_engine.close()
        await asyncio.wait_for(router._stop.wait(), 10)
        await asyncio.sleep(0)
        return task

    try:
        with caplog.at_level(logging.INFO):
            task = asyncio.run(main())
            gc.collect()
        assert task.done() and not task.cancelled() and task.exception() is None
        assert router.exit_status == dpmod.EXIT_DATAPATH
        # Each death is logged where it happens (with its traceback: a thread death is a bug); the exit
        # adds exactly one line and no traceback.
        exit_lines = [rec for rec in caplog.records if rec.levelno >= logging.ERROR
                      and not rec.getMessage().startswith("datapath thread")]
        assert [rec.getMessage()[:18] for rec in exit_lines] == ["data plane failed:"], caplog.text
        assert not any(rec.exc_info for rec in caplog.records if rec.name != "weavenet.datapath")
        assert "never retrieved" not in caplog.text
    finally:
        r.close()
        router.dataplane._netlink.shutdown(wait=False)


def test_each_thread_counts_in_its_own_counters_and_reports_sum_them():
    """No lock on the hot path and no lost increments: each thread writes only its own Stats (the Python
    path's; the lane's counters are atomic)."""
    r = Rig(None)
    try:
        n = 300
        sender = threading.Thread(target=lambda: [r.send(b"\x00" * 40) for _ in range(n)])
        sender.start()
        for _ in range(n):
            r.tap.send(b"\x01" * 8)   # a runt frame, read by the TAP thread
        sender.join()
        assert wait(lambda: r.eng.drops["runt"] == n and r.eng.drops["malformed"] == n, 5), dict(r.eng.drops)
        assert set(r.eng._stats["weave-tap-rx"].drops) == {"runt"}
        assert set(r.eng._stats["weave-udp-rx"].drops) == {"malformed"}
    finally:
        r.close()


class _FullSocket:
    """A sleeve socket whose send buffer stays full: every send would block, and it never becomes writable
    (its fileno is a full pipe's write end, which select reports as not writable)."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.w, False)
        with pytest.raises(BlockingIOError):
            while True:
                os.write(self.w, b"x" * 4096)
        self.tries = 0

    def fileno(self) -> int:
        return self.w

    def sendto(self, *args) -> int:
        self.tries += 1
        raise BlockingIOError

    sendmsg = sendto

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def test_full_send_buffer_gives_up_counted_and_the_thread_goes_on():
    r = Rig(None)           # the Python path's socket object swapped (test_lane.py: the lane's own)
    full = _FullSocket()
    real, r.eng.sock = r.eng.sock, full
    try:
        r.tap.send(frame(b"\xff" * 6, LOCAL_MAC))        # broadcast: to peer B
        assert wait(lambda: r.eng.drops["send_error"] == 1)
        assert full.tries >= 1            # tried, waited SEND_TIMEOUT for room that never came, gave up
        r.eng.sock = real
        f = frame(b"\xff" * 6, LOCAL_MAC, os.urandom(46))
        r.tap.send(f)
        assert f in sleeve.decode_body(r.recv_data(), 0, None)[3]
        r.assert_alive_and_delivering()
    finally:
        r.eng.sock = real
        full.close()
        r.close()
