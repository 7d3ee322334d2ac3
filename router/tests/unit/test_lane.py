"""The sleeve's C lane (datapath/_lane.c) in the real engine, without root: once the engine has decided where
a MAC pair's frames go, the lane carries them itself, and every hostile datagram it meets on that fast path is
dropped and counted as the engine would, with the thread alive afterwards. (Every rig test of
test_datapath_engine and test_engine_pmtu also runs with the lane.)"""

import os
import random

import pytest

from weavenet.datapath import engine, reassembly, sleeve
from weavenet.datapath import lane as clane
from weavenet.datapath.engine import View
from weavenet.datapath.replay import ReplayWindow

from .test_datapath_engine import KEY, LOCAL_MAC, REMOTE_MAC, B, Rig, frame, wait

needs_lane = pytest.mark.skipif(not clane.AVAILABLE, reason="the C lane is not built (WEAVENET_PURE)")


def test_the_lane_is_built_where_the_tests_run():
    # scripts/bootstrap installs a compiler and Python's headers: a lane silently missing would leave every
    # "-lane" test above unrun and the router at a third of its speed.
    assert clane.AVAILABLE or os.environ.get("WEAVENET_PURE"), "router/setup.py did not build _lane"


@needs_lane
def test_the_lanes_wire_constants_are_the_sleeves():
    from weavenet.datapath import _lane, pmtu
    assert (sleeve.HEADER.size, sleeve.BODY_HEAD.size, sleeve.FRAG_HEAD.size) == (_lane.HEADER, _lane.BODY_HEAD,
                                                                                  _lane.FRAG_HEAD)
    for name in ("MAGIC", "F_ENCRYPTED", "F_FRAG", "F_PROBE", "F_AEGIS", "KNOWN_FLAGS", "B_RELAY_ONLY", "TAG",
                 "AEGIS_TAG", "MAX_DATAGRAM", "MAX_FRAGS"):
        assert getattr(_lane, name) == getattr(sleeve, name), name
    assert (_lane.BATCH_FRAMES, _lane.BATCH_BYTES, _lane.GSO_SEGMENTS) == (engine.BATCH_FRAMES, engine.BATCH_BYTES,
                                                                          engine.GSO_SEGMENTS)
    assert _lane.SEND_TIMEOUT_MS == engine.SEND_TIMEOUT * 1000 and _lane.UDP_IP == pmtu.UDP_IP_OVERHEAD
    assert (_lane.REASM_SLOTS, _lane.REASM_TIMEOUT) == (reassembly.MAX_PENDING, reassembly.TIMEOUT)
    assert ReplayWindow().size == _lane.REPLAY_BITS


@needs_lane
def test_a_link_the_lane_cannot_carry_is_refused_at_once():
    name = sleeve.name_bytes(B)
    assert clane.new_link(name, ("::1", 6783), None, None, False, 1500) is None       # IPv6: the engine's path
    from weavenet.datapath import _lane
    for args in ((b"short", "127.0.0.1", 1, None, None, False, 1500),
                 (name, "127.0.0.1", 1, b"k" * 31, b"k" * 31, False, 1500),
                 (name, "127.0.0.1", 1, KEY, None, False, 1500),
                 (name, "127.0.0.1", 0, None, None, False, 1500)):
        with pytest.raises(ValueError):
            _lane.Link(*args)
    lk = clane.new_link(name, ("127.0.0.1", 6783), None, None, False, 1500)
    with pytest.raises(ValueError):
        lk.pmtu = 10


def primed(key, aegis: bool = False, **kw) -> Rig:
    """A lane rig where B's frames to us and ours to B have been decided by the engine (each MAC new to its
    table voids what the lane had cached, so B's frames go through the engine once more)."""
    r = Rig(key, aegis=aegis, lane=True, **kw)
    r.assert_alive_and_delivering()                 # REMOTE_MAC learned at B
    r.tap.send(frame(REMOTE_MAC, LOCAL_MAC))
    next_whole(r)                                   # LOCAL_MAC learned here: LOCAL -> REMOTE cached
    r.assert_alive_and_delivering()                 # B -> LOCAL cached
    return r


def assert_still_by_the_lane(r: Rig) -> None:
    """Alive, and B's frames to us go by the lane (a cached decision lasts CACHE_TTL: the first may renew it)."""
    r.assert_alive_and_delivering()
    _, delivered = r.eng.lane_fast()
    r.assert_alive_and_delivering()
    assert r.eng.lane_fast()[1] == delivered + 1


def opened(r: Rig, dg: bytes) -> list[bytes]:
    _, seq, _ = sleeve.peek(dg)
    return [bytes(f) for f in sleeve.decode_body(dg, seq, r.seal_key)[3]]


def next_whole(r: Rig) -> bytes:
    """The next datagram the engine sent B, put together as B would (it starts at the path-MTU floor)."""
    reasm = reassembly.Reassembler()
    while True:
        dg = r.recv_data()
        if not dg[1] & sleeve.F_FRAG:
            return dg
        whole = reasm.add(dg, sleeve.peek(dg)[1], 0.0)
        if whole is not None:
            return whole


@needs_lane
@pytest.mark.parametrize("mode", ["plain", "encrypted", "aegis"])
def test_after_its_first_frame_a_flow_goes_by_the_lane_both_ways_in_order(mode):
    r = primed(None if mode == "plain" else KEY, aegis=mode == "aegis")
    try:
        sent0, delivered0 = r.eng.lane_fast()
        ins = [frame(LOCAL_MAC, REMOTE_MAC, os.urandom(60 + i)) for i in range(20)]
        for f in ins:
            r.send(r.valid([f]))
        assert [r.delivered() for _ in ins] == ins
        outs = [frame(REMOTE_MAC, LOCAL_MAC, os.urandom(60 + i)) for i in range(20)]
        for f in outs:
            r.tap.send(f)
        got, seqs = [], []
        while len(got) < len(outs):
            dg = next_whole(r)
            seqs.append(sleeve.peek(dg)[1])
            got += opened(r, dg)
        assert got == outs
        assert seqs == sorted(set(seqs))            # one counter for the engine's sends and the lane's
        sent, delivered = r.eng.lane_fast()
        assert (sent - sent0, delivered - delivered0) == (20, 20)
        # (the lane counts a datagram once its send returned: the peer may have it a moment before)
        assert wait(lambda: r.eng.frames[(B, "rx")] >= 21 and r.eng.frames[(B, "tx")] >= 21), dict(r.eng.frames)
        assert not r.eng.drops
    finally:
        r.close()


@needs_lane
@pytest.mark.parametrize("mode", ["encrypted", "aegis"])
def test_forged_replayed_and_misdirected_datagrams_on_the_fast_path_are_dropped_and_counted(mode):
    r = primed(KEY, aegis=mode == "aegis")
    try:
        f = frame(LOCAL_MAC, REMOTE_MAC, os.urandom(46))
        dg = r.valid([f])
        r.send(dg)
        assert r.delivered() == f
        r.send(dg)                                          # replayed
        assert wait(lambda: r.eng.drops["replay"] == 1), dict(r.eng.drops)
        bad = bytearray(r.valid([f]))
        bad[-1] ^= 1                                        # forged
        r.send(bytes(bad))
        assert wait(lambda: r.eng.drops["auth"] == 1), dict(r.eng.drops)
        r.send(r.valid([f]), src="127.0.0.2")               # B's name from another address
        assert wait(lambda: r.eng.drops["wrong_source"] == 1), dict(r.eng.drops)
        for junk in (dg[:17], bytes([dg[0], dg[1] | 0x40]) + dg[2:], r.valid([f])[:16] + b"\x00" * 20):
            r.send(junk)
        assert wait(lambda: r.eng.drops["malformed"] + r.eng.drops["auth"] == 4), dict(r.eng.drops)
        assert r.delivered() is None
        assert_still_by_the_lane(r)
    finally:
        r.close()


@needs_lane
def test_plain_datagrams_whose_frames_do_not_parse_deliver_nothing():
    r = primed(None)
    try:
        body = sleeve.name_bytes(B) + sleeve.name_bytes("02:00:00:00:00:0a") + b"\x00"
        good = frame(LOCAL_MAC, REMOTE_MAC)
        for tail in (len(good).to_bytes(4, "big") + good + b"\x00\x00\x01",          # a length cut short
                     (10 ** 6).to_bytes(4, "big") + good):                            # longer than the datagram
            r.seq += 1
            r.send(sleeve.HEADER.pack(sleeve.MAGIC, 0, sleeve.name_bytes(B), r.seq) + body + tail)
        assert wait(lambda: r.eng.drops["malformed"] == 2), dict(r.eng.drops)
        assert r.delivered() is None                        # not even the good frame before the bad length
        r.assert_alive_and_delivering()
    finally:
        r.close()


@needs_lane
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_fragments_out_of_order_and_duplicated_are_put_together_once_and_the_table_stays_bounded(key):
    r = primed(key)
    try:
        f = frame(LOCAL_MAC, REMOTE_MAC, os.urandom(4000))
        parts = sleeve.fragment(r.valid([f]), 600)
        for p in [parts[-1], parts[-1], *reversed(parts[:-1])]:    # a duplicate while it is put together
            r.send(p)
        assert r.delivered() == f
        assert r.delivered() is None
        assert r.eng.lane_fast()[1] >= 1
        for _ in range(20):                                  # 20 datagrams never completed: 8 kept at most
            r.send(sleeve.fragment(r.valid([f]), 600)[0])
        assert wait(lambda: r.eng.drops["frag_incomplete"] == 20 - reassembly.MAX_PENDING), dict(r.eng.drops)
        mixed = sleeve.fragment(r.valid([f]), 600)
        r.send(mixed[0])
        r.send(mixed[1][:-5])                               # a middle fragment shorter than the first
        bad_count = bytearray(sleeve.fragment(r.valid([f]), 600)[0])
        bad_count[sleeve.HEADER.size + 1] = 1               # "1 of 1": not a fragment
        r.send(bytes(bad_count))
        assert wait(lambda: r.eng.drops["malformed"] == 2), dict(r.eng.drops)
        assert_still_by_the_lane(r)
    finally:
        r.close()


@needs_lane
def test_a_mac_that_moved_to_our_bridge_voids_the_cached_delivery_from_a_peer():
    r = primed(KEY)
    try:
        r.tap.send(frame(b"\xff" * 6, REMOTE_MAC))          # REMOTE_MAC now speaks from our bridge
        next_whole(r)
        r.send(r.valid([frame(LOCAL_MAC, REMOTE_MAC)]))     # B still claims it: refused by the engine
        assert wait(lambda: r.eng.drops["mac_hijack"] == 1), dict(r.eng.drops)
        assert r.delivered() is None
    finally:
        r.close()


@needs_lane
def test_a_new_view_voids_every_cached_decision():
    r = primed(None)
    try:
        r.eng.publish(View(r.eng.ourself, r.routes, {}))    # B's link gone (the route not yet)
        r.tap.send(frame(REMOTE_MAC, LOCAL_MAC))
        assert wait(lambda: r.eng.drops["no_route"] == 1), dict(r.eng.drops)
        r.send(r.valid([frame(LOCAL_MAC, REMOTE_MAC)]))
        assert wait(lambda: r.eng.drops["unknown_peer"] == 1), dict(r.eng.drops)
        assert r.delivered() is None
    finally:
        r.close()


@needs_lane
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_a_thousand_mutated_datagrams_never_stop_the_lane(key):
    """Random flips, cuts and extensions of valid datagrams and fragments on the fast path (a short budget of
    what scripts/fuzz does for the decoders): every one is delivered or dropped, the thread lives on."""
    rnd = random.Random(1306)
    r = primed(key)
    try:
        f = frame(LOCAL_MAC, REMOTE_MAC, os.urandom(300))
        for i in range(1000):
            dg = bytearray(r.valid([f, f]) if i % 3 else rnd.choice(sleeve.fragment(r.valid([f] * 8), 700)))
            for _ in range(rnd.randint(1, 4)):
                if not dg:
                    break
                at = rnd.randrange(len(dg))
                match rnd.randrange(3):
                    case 0:
                        dg[at] ^= 1 << rnd.randrange(8)
                    case 1:
                        del dg[at:]
                    case 2:
                        dg[at:at] = os.urandom(rnd.randint(1, 64))
            if dg:
                r.send(bytes(dg))
        r.tap.settimeout(0.2)
        while r.delivered() is not None:                     # plain: some mutations still parse
            pass
        r.tap.settimeout(1.0)
        r.assert_alive_and_delivering()
    finally:
        r.close()


@needs_lane
def test_a_frame_within_the_overlay_mtu_but_above_the_path_mtu_goes_by_the_lane_in_fragments():
    r = primed(KEY, mtu=1376, ceiling=1500)
    try:
        f = frame(REMOTE_MAC, LOCAL_MAC, os.urandom(1300))
        sent, _ = r.eng.lane_fast()
        r.tap.send(f)
        assert opened(r, next_whole(r)) == [f]
        assert r.eng.lane_fast()[0] == sent + 1
    finally:
        r.close()


@needs_lane
def test_the_engine_without_the_lane_when_asked():
    try:
        os.environ["WEAVENET_SLEEVE_LANE"] = "off"
        assert not clane.wanted(None) and clane.wanted(True)
    finally:
        del os.environ["WEAVENET_SLEEVE_LANE"]
    assert clane.wanted(None)


def test_weave_status_says_when_the_sleeve_runs_without_its_lane():
    from weavenet.api import format as fmt
    off = {"health": "healthy", "sleeve": {"lane": False, "lane_off": clane.describe(False)}}
    assert fmt._datapath(off).startswith("healthy (sleeve: the Python engine only (")
    assert fmt._datapath({"health": "healthy", "sleeve": {"lane": True, "lane_off": None}}) == "healthy"


@needs_lane
def test_a_link_without_its_c_half_is_carried_by_the_engine_alone():
    r = Rig(KEY, lane=True)
    try:
        r.link.c = None                                  # as for an address the lane cannot carry
        r.eng.publish(View(r.eng.ourself, r.routes, {B: r.link}))
        r.assert_alive_and_delivering()
        r.assert_alive_and_delivering()                  # the replay window is the engine's: no false replay
        r.tap.send(frame(REMOTE_MAC, LOCAL_MAC))
        assert opened(r, next_whole(r)) == [frame(REMOTE_MAC, LOCAL_MAC)]
        assert r.eng.lane_fast() == (0, 0) and not r.eng.drops
    finally:
        r.close()
