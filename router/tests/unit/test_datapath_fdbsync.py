"""Static VXLAN FDB adverts: encode/decode, hostile adverts refused and counted, claims -> FDB changes,
what is advertised when; and a hostile advert through Dataplane.on_datapath_message."""

import contextlib
import json
import time

import pytest

from weavenet.datapath import fastdp, fdbsync
from weavenet.datapath.fdbsync import Advert, AdvertError, Advertiser, RemoteMacs
from weavenet.weaver.dataplane import Dataplane, DataplaneConfig

M1, M2, M3, M4 = "02:00:00:00:01:01", "02:00:00:00:01:02", "0a:00:00:00:02:01", "0a:00:00:00:02:02"
IP_B, IP_C = "192.0.2.2", "192.0.2.3"


def fdb(obj) -> bytes:
    return json.dumps({"fdb": obj}).encode()


def test_full_and_diff_roundtrip():
    assert fdbsync.decode(fdbsync.encode_full({M2, M1})) == Advert(True, frozenset({M1, M2}))
    assert fdbsync.decode(fdbsync.encode_diff({M3}, {M1})) == Advert(False, frozenset({M3}), frozenset({M1}))
    assert fdbsync.decode(fdbsync.encode_full(set())) == Advert(True, frozenset())


@pytest.mark.parametrize("body", [fastdp.status_message(True), fastdp.status_message(False), b"", b"\xff\xfe",
                                  b"[1,2]", b'{"other": 1}', b"null"])
def test_other_datapath_messages_are_not_adverts(body):
    assert fdbsync.decode(body) is None


@pytest.mark.parametrize("body, reason", [
    (b'{"fdb": 1}', "fdb_malformed"),
    (fdb({"add": [M1]}), "fdb_malformed"),                          # no "full"
    (fdb({"full": 1, "add": [M1]}), "fdb_malformed"),               # not a boolean
    (fdb({"full": True, "add": M1}), "fdb_malformed"),              # not a list
    (fdb({"full": True, "add": [M1], "del": [M2]}), "fdb_malformed"),
    (fdb({"full": False, "add": [M1], "del": [M1]}), "fdb_malformed"),
    (fdb({"full": True, "add": ["02:00:00:00:01:0G"]}), "fdb_bad_mac"),
    (fdb({"full": True, "add": ["02:00:00:00:01:0A"]}), "fdb_bad_mac"),    # not canonical
    (fdb({"full": True, "add": ["02-00-00-00-01-01"]}), "fdb_bad_mac"),
    (fdb({"full": True, "add": ["01:00:5e:00:00:01"]}), "fdb_bad_mac"),    # multicast
    (fdb({"full": True, "add": ["ff:ff:ff:ff:ff:ff"]}), "fdb_bad_mac"),
    (fdb({"full": True, "add": ["00:00:00:00:00:00"]}), "fdb_bad_mac"),    # the flood entry
    (fdb({"full": True, "add": [M1 + "\n"]}), "fdb_bad_mac"),
    (fdb({"full": True, "add": [17]}), "fdb_bad_mac"),
    (fdb({"full": True, "add": [None]}), "fdb_bad_mac"),
    (fdb({"full": True, "add": [f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}" for i in range(4097)]}), "fdb_too_many"),
    (fdb({"full": True, "add": [M1] * 4097}), "fdb_too_many"),
    (b" " * (fdbsync.MAX_ADVERT_BYTES + 1), "fdb_too_big"),
])
def test_hostile_adverts_are_refused_with_a_reason(body, reason):
    with pytest.raises(AdvertError) as e:
        fdbsync.decode(body)
    assert e.value.reason == reason


def test_claims_become_fdb_changes_for_eligible_peers_only():
    r = RemoteMacs()
    assert r.apply("b", Advert(True, frozenset({M1, M2})), set()) is None
    assert r.changes({}) == ([], [])                         # b's fast path is not up: nothing installed
    assert r.changes({"b": IP_B}) == ([(M1, IP_B), (M2, IP_B)], [])
    assert r.changes({"b": IP_B}) == ([], [])                 # idempotent
    assert r.apply("b", Advert(False, frozenset({M3}), frozenset({M1})), set()) is None
    assert r.claims["b"] == {M2, M3}
    assert r.changes({"b": IP_B}) == ([(M3, IP_B)], [(M1, IP_B)])
    assert r.changes({}) == ([], [(M2, IP_B), (M3, IP_B)])   # path down or grace over: all go
    r.drop_peer("b")
    assert r.total == 0 and r.owners == {} and r.claims == {}


def test_a_change_needs_a_full_list_first():
    r = RemoteMacs()
    assert r.apply("b", Advert(False, frozenset({M1})), set()) == "fdb_no_base"
    assert r.refused["fdb_no_base"] == 1 and "b" not in r.claims


def test_our_macs_are_never_taken_and_a_peer_cannot_steal_anothers():
    r = RemoteMacs()
    assert r.apply("b", Advert(True, frozenset({M1, M2})), {M2}) is None
    assert r.claims["b"] == {M1} and r.refused["fdb_ours"] == 1
    assert r.apply("c", Advert(True, frozenset({M1, M3})), set()) is None     # M1 is b's: first claim wins
    assert r.changes({"b": IP_B, "c": IP_C}) == ([(M1, IP_B), (M3, IP_C)], [])
    # M1 became local to us meanwhile (a container moved here): its entry goes.
    assert r.changes({"b": IP_B, "c": IP_C}, forbidden={M1}) == ([], [(M1, IP_B)])
    # b withdraws M1 (the container moved to c): c's claim takes over.
    r.apply("b", Advert(False, frozenset(), frozenset({M1})), set())
    assert r.changes({"b": IP_B, "c": IP_C}) == ([(M1, IP_C)], [])


def test_per_peer_and_total_caps():
    r = RemoteMacs(per_peer=3, total=4)
    many = frozenset({M1, M2, M3, M4})
    assert r.apply("b", Advert(True, many), set()) == "fdb_too_many" and "b" not in r.claims
    assert r.apply("b", Advert(True, frozenset({M1, M2, M3})), set()) is None
    assert r.apply("b", Advert(False, frozenset({M4})), set()) == "fdb_too_many"   # a diff past the cap
    assert r.claims["b"] == {M1, M2, M3}
    assert r.apply("c", Advert(True, frozenset({"0a:00:00:00:03:01", "0a:00:00:00:03:02"})), set()) == "fdb_total"
    assert r.apply("c", Advert(True, frozenset({"0a:00:00:00:03:01"})), set()) is None
    assert r.total == 4 and r.refused == {"fdb_too_many": 2, "fdb_total": 1}
    r.drop_peer("b")
    assert r.total == 1


def test_flushed_entries_are_installed_again():
    r = RemoteMacs()
    r.apply("b", Advert(True, frozenset({M1})), set())
    assert r.changes({"b": IP_B}) == ([(M1, IP_B)], [])
    r.forget_ip(IP_B)   # the path went down and came back: the flush took the entry
    assert r.dirty and r.changes({"b": IP_B}) == ([(M1, IP_B)], [])


def test_advertiser_full_on_new_connection_then_diffs_then_anti_entropy():
    a = Advertiser()
    assert fdbsync.decode(a.due("b", 1, frozenset({M1}), 0.0)) == Advert(True, frozenset({M1}))
    assert a.due("b", 1, frozenset({M1}), 1.0) is None
    assert fdbsync.decode(a.due("b", 1, frozenset({M2}), 2.0)) == Advert(False, frozenset({M2}), frozenset({M1}))
    assert a.due("b", 1, frozenset({M2}), 3.0) is None
    assert fdbsync.decode(a.due("b", 2, frozenset({M2}), 4.0)).full          # reconnected
    assert a.due("b", 2, frozenset({M2}), 4.0 + fdbsync.FULL_EVERY - 0.1) is None
    assert fdbsync.decode(a.due("b", 2, frozenset({M2}), 4.0 + fdbsync.FULL_EVERY)).full
    a.retain([])
    assert a.sent == {}


def test_hostile_adverts_through_the_dataplane_are_counted_and_status_still_works():
    dp = Dataplane(DataplaneConfig(), "02:00:00:00:00:0a")
    try:
        dp.bridge_mac = M4
        dp.decider.set_candidates({"b": (IP_B, "02:aa:00:00:00:02")})
        dp.on_datapath_message("b", fdb({"full": True, "add": ["01:00:5e:00:00:01"]}))
        dp.on_datapath_message("b", fdb({"full": False, "add": [M1]}))
        dp.on_datapath_message("b", b"{" * (fdbsync.MAX_ADVERT_BYTES + 1))
        # Our bridge's MAC and the peer's own VXLAN MAC (heartbeats) are refused, M1 taken.
        dp.on_datapath_message("b", fdbsync.encode_full({M1, M4, "02:aa:00:00:00:02"}))
        assert dp.remote_macs.claims == {"b": {M1}}
        drops = dp.drop_counts()
        assert {k: drops[k] for k in ("fdb_bad_mac", "fdb_no_base", "fdb_too_big", "fdb_ours")} == \
            {"fdb_bad_mac": 1, "fdb_no_base": 1, "fdb_too_big": 1, "fdb_ours": 2}
        dp.on_datapath_message("b", fastdp.status_message(True))
        assert dp.decider.paths["b"].remote_ok
    finally:
        dp._netlink.shutdown(wait=False)


def test_a_datapath_message_proves_the_peers_router_alive_so_its_silent_path_falls_back():
    """Any control message (a heartbeat, a status, an answer to our ask) is proof of life: a path quiet since
    before it is broken once the peer's heartbeat had REPLY_GRACE to arrive, and the ticker is woken for it."""
    dp = Dataplane(DataplaneConfig(), "02:00:00:00:00:0a")
    try:
        dp.decider.set_candidates({"b": (IP_B, "02:aa:00:00:00:02")})
        path = dp.decider.paths["b"]
        path.last_rx = time.monotonic() - fastdp.RX_TIMEOUT - 0.1
        dp._urgent = False
        assert not path.silent(time.monotonic() + 5)      # silent on both: maybe a stalled peer
        now = time.monotonic()
        dp.on_datapath_message("b", fastdp.status_message(True))
        assert dp.wants_tick()                            # woken: its heartbeat has REPLY_GRACE from now
        assert not path.silent(now)
        later = now + fastdp.REPLY_GRACE + 0.01
        assert path.silent(later) and not dp.decider.hears("b", later)
        dp.decider.heard("b", now + 0.05)                 # it came after all (read on the next tick)
        assert not path.silent(later) and path.proof_at == 0.0
    finally:
        dp._netlink.shutdown(wait=False)


def test_a_control_heartbeat_is_no_proof_against_a_quiet_path_and_a_fallback_keeps_the_heartbeat_entry():
    """A control heartbeat may leave from the peer's read callbacks while its ticker (which sends its fast-path
    heartbeats) is starved: it keeps the peer's status current but never makes a quiet path silent. A path
    that falls back keeps its heartbeat FDB entry (only the flood and unicast entries go)."""
    dp = Dataplane(DataplaneConfig(), "02:00:00:00:00:0a")
    try:
        dp._nl = nl = Recorder()
        dp.decider.set_candidates({"b": (IP_B, "02:aa:00:00:00:02")})
        path = dp.decider.paths["b"]
        path.last_rx = time.monotonic() - fastdp.RX_TIMEOUT - 0.1
        dp._urgent = dp._changed = False
        dp.on_heartbeat("b")
        assert path.proof_at == 0.0 and not dp.wants_tick() and path.ctrl_at > path.last_rx
        assert not path.silent(time.monotonic() + fastdp.REPLY_GRACE + 1)
        dp._path_down(path, removed=False, why="test")
        assert ("fdb_flush_dst", ("vxlan-6784", IP_B, frozenset({"02:aa:00:00:00:02"}))) in nl.take()
        dp._path_down(path, removed=True)             # gone as a candidate: everything goes
        assert ("fdb_flush_dst", ("vxlan-6784", IP_B, frozenset())) in nl.take()
    finally:
        dp._netlink.shutdown(wait=False)


def test_source_filter_changes_queued_behind_a_busy_netlink_thread_collapse_into_one_nft_run(monkeypatch):
    import threading

    from weavenet.net import udpfilter

    applied: list[set[str]] = []
    monkeypatch.setattr(udpfilter, "set_peers", lambda peers: applied.append(set(peers)))
    dp = Dataplane(DataplaneConfig(), "02:00:00:00:00:0a")
    try:
        dp._filter_peers = frozenset()
        gate = threading.Event()
        dp._netlink.submit(gate.wait)                 # the netlink thread is busy
        for ips in ({"192.0.2.2"}, {"192.0.2.2", "192.0.2.3"}, {"192.0.2.3"}):
            dp._update_filter(ips)
        gate.set()
        dp._netlink.submit(lambda: None).result()
        assert applied == [{"192.0.2.3"}]             # one run, with the latest set
        dp._update_filter({"192.0.2.4"})              # idle again: a change is applied on its own
        dp._netlink.submit(lambda: None).result()
        assert applied == [{"192.0.2.3"}, {"192.0.2.4"}]
    finally:
        dp._netlink.shutdown(wait=True)


class StampedSocket:
    """A heartbeat socket with frames waiting, each with the kernel's arrival stamp (SO_TIMESTAMPNS)."""

    def __init__(self, frames: list[tuple[bytes, float]]) -> None:
        self.frames = list(frames)

    def recvmsg(self, *args) -> tuple:
        import socket
        import struct

        if not self.frames:
            raise BlockingIOError
        frame, mono = self.frames.pop(0)
        wall = mono + time.time() - time.monotonic()
        stamp = struct.pack("@ll", int(wall), int((wall % 1) * 1e9))
        return frame[:fastdp.HB_SNAP], [(socket.SOL_SOCKET, fastdp.SO_TIMESTAMPNS, stamp)], 0, ("vxlan", 0, 0, 1, b"")


def test_a_starved_router_reads_the_heartbeats_that_came_before_a_message_it_is_late_to_handle():
    """We got to the peer's status seconds after it came (our loop starved), its heartbeats came meanwhile:
    they are read (with their arrival stamps) before the status counts as proof that the path is quiet."""
    peer = "02:00:00:00:00:0b"
    dp = Dataplane(DataplaneConfig(), "02:00:00:00:00:0a")
    try:
        dp.decider.set_candidates({peer: (IP_B, "02:aa:00:00:00:02")})
        path = dp.decider.paths[peer]
        path.last_rx = time.monotonic() - 5                 # our last read, 5 s ago
        arrived = time.monotonic() - 0.5
        frame = fastdp.heartbeat_frame("02:aa:00:00:00:02", "02:aa:00:00:00:01", peer, 0.0, 14 + 1376)
        dp._hb_sock = StampedSocket([(frame, arrived)])
        dp.on_datapath_message(peer, fastdp.status_message(True))
        assert abs(path.last_rx - arrived) < 0.01 and path.proof_at == 0.0
        assert not path.silent(time.monotonic() + fastdp.REPLY_GRACE)
        dp._hb_sock = StampedSocket([])                     # and when none came, it is proof
        path.last_rx = time.monotonic() - 5
        dp.on_datapath_message(peer, fastdp.status_message(True))
        assert path.proof_at > 0 and path.silent(time.monotonic() + fastdp.REPLY_GRACE)
    finally:
        dp._hb_sock = None
        dp._netlink.shutdown(wait=False)


def test_without_fastdp_adverts_are_refused():
    dp = Dataplane(DataplaneConfig(encrypted=True), "02:00:00:00:00:0a")
    try:
        dp.on_datapath_message("b", fdbsync.encode_full({M1}))
        assert dp.remote_macs.claims == {} and dp.drop_counts()["fdb_no_fastdp"] == 1
    finally:
        dp._netlink.shutdown(wait=False)


def test_decode_is_fast_enough_for_a_full_list():
    body = fdbsync.encode_full({f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}" for i in range(fdbsync.MAX_PEER_MACS)})
    assert len(body) < fdbsync.MAX_ADVERT_BYTES
    t0 = time.perf_counter()
    assert len(fdbsync.decode(body).add) == fdbsync.MAX_PEER_MACS
    assert time.perf_counter() - t0 < 0.5


class Recorder:
    """Stands in for the netlink thread (the unit tests have no VXLAN device): what would be changed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def __call__(self, fn, *args) -> None:
        if fn.__name__ == "_apply_filter":   # the source filter's coalesced run: what it would apply, now
            fn.__self__._filter_queued = False
            self.calls.append(("set_peers", (set(fn.__self__._filter_peers),)))
            return
        self.calls.append((fn.__name__, args))

    def take(self) -> list[tuple[str, tuple]]:
        out, self.calls = self.calls, []
        return out


@contextlib.contextmanager
def fastdp_pair():
    """Router a's real Dataplane (netlink calls recorded, sockets paired) fed by its in-memory mesh with b,
    b's fast path up: yields (net, a, b, dp, recorder)."""
    import socket

    from weavenet.datapath.engine import Engine
    from weavenet.datapath.macs import MacTable
    from weavenet.mesh.gossip import Gossiper
    from weavenet.weaver.dataplane import DatapathSend
    from weavenet.weaver.events import Dispatcher

    from .meshsim import SimNet, full_mesh

    net = SimNet()
    a, b = net.add(1), net.add(2)
    a.identity.features["fastdp"], b.identity.features["fastdp"] = "02:aa:00:00:00:01", "02:aa:00:00:00:02"
    dp = Dataplane(DataplaneConfig(), a.identity.name)
    dispatch = Dispatcher(a, Gossiper(), dp)   # a's mesh events reach the data plane as in the router
    net.hooks[net.addr_of(a)] = lambda outputs: dispatch.run(outputs, net.now)
    net.run(net.addr_of(a), a.connect([net.addr_of(b)], net.now))
    net.until(lambda: full_mesh(net), 10)
    tap, tap_engine = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    hb, hb_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    dp.engine = Engine(a.identity.name, tap_engine.fileno(), 0, MacTable(), vnet_hdr=False, bind="127.0.0.1")
    dp._nl = nl = Recorder()
    dp._hb_sock, dp.vxlan_mac, dp._filter_peers = hb, "02:aa:00:00:00:01", frozenset()
    dp._local_read = frozenset({M1})
    try:
        b_name, b_ip = b.identity.name, "192.0.2.2"
        first = dp.sync(net.now)
        assert DatapathSend(b.identity.name, fdbsync.encode_full({M1})) in first   # our MACs, to b
        assert (b_name, b_ip) in [(n, p.ip) for n, p in dp.decider.paths.items()]
        dp.decider.heard(b_name, net.now)
        dp.on_datapath_message(b_name, fastdp.status_message(True))
        dp.on_datapath_message(b_name, fdbsync.encode_full({M3}))
        dp.sync(net.now)
        assert dp.decider.active() == {b_name}
        calls = nl.take()
        assert ("fdb_append", ("vxlan-6784", fastdp.ZERO_MAC, b_ip)) in calls
        assert ("fdb_apply", ("vxlan-6784", [(M3, b_ip)], [])) in calls
        assert ("set_peers", ({b_ip},)) in calls
        yield net, a, b, dp, nl
    finally:
        dp.engine.stop()
        for s in (tap, tap_engine, hb, hb_peer):
            s.close()
        dp._netlink.shutdown(wait=False)


def test_a_peer_whose_connection_ended_keeps_its_fast_path_state_for_the_grace_period():
    from weavenet.weaver import dataplane as dpmod

    with fastdp_pair() as (net, a, b, dp, nl):
        b_name, b_ip = b.identity.name, "192.0.2.2"
        # b's router is killed: the connection ends, its kernel still forwards. Nothing is flushed.
        net.kill(b)
        dp.sync(net.now)
        assert dp.decider.paths == {} and b_ip in dp._grace
        assert not [c for c in nl.take() if c[0] in ("fdb_flush_dst", "set_peers", "fdb_apply")]
        assert dp.remote_macs.claims == {b_name: {M3}}
        dp.sync(net.now + dpmod.GRACE - 1)
        assert not [c for c in nl.take() if c[0] in ("fdb_flush_dst", "set_peers")]
        # The grace period is over: flushed as a path going down would be; out of the source filter.
        dp.sync(net.now + dpmod.GRACE + 0.1)
        calls = nl.take()
        assert ("fdb_flush_dst", ("vxlan-6784", b_ip, frozenset())) in calls and ("set_peers", (set(),)) in calls
        dp.sync(net.now + dpmod.GRACE + 0.2)
        assert dp._grace == {} and dp.remote_macs.claims == {}   # its claims are forgotten too


def test_a_connection_the_kernel_timed_out_takes_its_fast_path_down_at_once():
    """A cut link (keepalive unanswered) can end the connection within the fast path's own timeout, while its
    heartbeats still look fresh: no grace then (that is for a router restarting), or traffic keeps going
    straight into the cut instead of round it."""
    with fastdp_pair() as (net, a, b, dp, nl):
        b_name, b_ip = b.identity.name, "192.0.2.2"
        dp.decider.heard(b_name, net.now + 10)   # its heartbeats look fresh to the end
        net.cut.add(frozenset((net.addr_of(a), net.addr_of(b))))
        net.until(lambda: not a.live_connections(), 5)
        dp.sync(net.now)
        assert dp.decider.paths == {} and b_ip not in dp._grace and dp._link_failed == set()
        calls = nl.take()
        assert ("fdb_flush_dst", ("vxlan-6784", b_ip, frozenset())) in calls and ("set_peers", (set(),)) in calls
