"""The sleeve's path-MTU prober, fragmentation and reassembly, fed plain events and hostile input."""

import os

import pytest

from weavenet.datapath import pmtu, reassembly, sleeve
from weavenet.datapath.pmtu import FLOOR, Prober

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
KEY = bytes(range(32))


def run_path(prober: Prober, path_mtu: int, start: float = 0.0, until: float = 30.0, rtt: float = 0.01) -> float:
    """Drive the prober against a path that carries datagrams up to path_mtu; returns when it settled."""
    now = start
    while now < until:
        for nonce, size in prober.tick(now):
            if size <= path_mtu:
                prober.on_reply(nonce, size, now + rtt)
        if not prober.searching:
            return now
        now += 0.1
    raise AssertionError(f"no verdict by {until}s: lo={prober.lo} hi={prober.hi}")


@pytest.mark.parametrize("path_mtu", [576, 700, 1300, 1500])
def test_search_finds_the_path_mtu_within_a_step_and_never_above(path_mtu):
    p = Prober(1500, now=0.0)
    assert p.pmtu == FLOOR               # safe until something was answered
    settled = run_path(p, path_mtu)
    assert path_mtu - pmtu.STEP < p.pmtu <= path_mtu
    assert settled < 6.0                 # a few rounds of ROUND_TIMEOUT at most


def test_a_round_lost_entirely_says_nothing_about_sizes():
    # The peer is not ready for the first rounds (its side of the connection is not up yet): nothing answered.
    p = Prober(1500, now=0.0)
    for t in (0.0, 1.1, 2.2):
        p.tick(t)
    assert (p.lo, p.hi, p.pmtu) == (FLOOR, 1500, FLOOR)
    run_path(p, 1300, start=3.3, until=30)
    assert 1300 - pmtu.STEP < p.pmtu <= 1300


def test_confirmation_misses_fall_back_to_the_floor_and_search_again():
    p = Prober(1500, now=0.0)
    t = run_path(p, 1500)
    assert p.pmtu == 1500
    # The path shrinks to 900: confirmations go unanswered.
    t += pmtu.CONFIRM_EVERY + 0.1
    for _ in range(pmtu.MISSES + 1):
        for nonce, size in p.tick(t):     # the confirmations (1500) are lost
            if size <= 900:
                p.on_reply(nonce, size, t)
        if p.searching:
            break
        t += pmtu.CONFIRM_EVERY + 0.1
    assert p.searching and p.pmtu <= 900
    run_path(p, 900, start=t, until=t + 30)
    assert 900 - pmtu.STEP < p.pmtu <= 900


def test_research_finds_a_path_that_grew_and_keeps_the_size_in_use_meanwhile():
    p = Prober(1500, now=0.0)
    t = run_path(p, 800)
    t0 = t
    while t < t0 + pmtu.RESEARCH_EVERY + 10:
        for nonce, size in p.tick(t):
            assert p.pmtu >= 800 - pmtu.STEP     # never back to the floor while looking for more
            if size <= 1400:
                p.on_reply(nonce, size, t)
        t += 0.5
    assert 1400 - pmtu.STEP < p.pmtu <= 1400


def test_forged_replies_cannot_grow_it_above_the_ceiling_or_confirm_unsent_sizes():
    p = Prober(1500, now=0.0)
    probes = p.tick(0.0)
    assert probes and all(FLOOR <= s <= 1500 for _, s in probes)
    # Unknown nonce, a known nonce with another size (bigger than the ceiling, or smaller than the floor).
    assert not p.on_reply(os.urandom(8), 9000, 0.01)
    nonce, size = probes[0]
    assert not p.on_reply(nonce, 9000, 0.01) and not p.on_reply(nonce, 100, 0.01)
    assert p.ignored == 3
    for _ in range(100):
        p.on_reply(os.urandom(8), 65535, 0.02)
    p.tick(5.0)
    assert FLOOR <= p.pmtu <= 1500 and p.lo <= p.ceiling == 1500
    # A replayed echo counts once.
    q = Prober(1500, now=0.0)
    (n1, s1), *_ = q.tick(0.0)
    assert q.on_reply(n1, s1, 0.01) and not q.on_reply(n1, s1, 0.02)


def test_ceiling_is_clamped_and_a_smaller_route_mtu_is_obeyed():
    assert Prober(100).ceiling == FLOOR and Prober(10**6).ceiling == pmtu.CEILING_MAX
    p = Prober(1500, now=0.0)
    run_path(p, 1500)
    p.on_ceiling(1000, 50.0)
    assert p.pmtu <= 1000 and p.ceiling == 1000
    for _, size in p.tick(50.0):
        assert size <= 1000
    p.on_ceiling(10, 60.0)                # whatever the kernel says, never below the floor
    assert p.ceiling == FLOOR and p.pmtu == FLOOR


def test_route_mtu_of_loopback_and_of_nowhere():
    assert pmtu.route_mtu("127.0.0.1", 9) == pmtu.CEILING_MAX   # lo's 65536, clamped
    assert FLOOR <= pmtu.route_mtu("0.0.0.0", 9) <= pmtu.CEILING_MAX


@pytest.mark.parametrize("key", [None, KEY])
@pytest.mark.parametrize("limit", [548, 672, 1472])
def test_fragments_fit_and_reassemble_to_the_datagram(key, limit):
    frames = [os.urandom(n) for n in (60, 1400, 9000, 0)]
    dg = sleeve.encode(sleeve.name_bytes(A), 42, sleeve.name_bytes(A), sleeve.name_bytes(B), frames, key)
    frags = sleeve.fragment(dg, limit)
    assert len(frags) > 1 and all(len(f) <= limit for f in frags)
    assert len({len(f) for f in frags[:-1]}) == 1            # equal sizes: one UDP GSO send can carry them
    r = reassembly.Reassembler()
    order = frags[1:] + frags[:1]
    got = [r.add(f, 42, 0.0) for f in order]
    assert got[:-1] == [None] * (len(frags) - 1) and got[-1] == dg
    assert sleeve.decode_body(got[-1], 42, key)[3] == frames
    assert not r.pending


def test_reassembly_refuses_bad_fragments_and_stays_bounded():
    dg = sleeve.encode(sleeve.name_bytes(A), 1, sleeve.name_bytes(A), sleeve.BROADCAST, [bytes(3000)], None)
    frags = sleeve.fragment(dg, 600)
    r = reassembly.Reassembler()
    head = frags[0][:sleeve.HEADER.size]
    for bad in (head + bytes([0, 1]) + b"x",          # count 1 is not a fragment
                head + bytes([5, 5]) + b"x",          # index beyond count
                head[:10]):                           # truncated
        with pytest.raises(sleeve.SleeveError):
            r.add(bad, 1, 0.0)
    # The same seq with a different count: the partial datagram is thrown away.
    assert r.add(frags[0], 1, 0.0) is None
    with pytest.raises(sleeve.SleeveError):
        r.add(head + bytes([1, 200]) + b"x", 1, 0.0)
    assert 1 not in r.pending
    # Many unfinished datagrams: at most MAX_PENDING kept, the oldest evicted.
    for seq in range(100, 150):
        assert r.add(frags[0], seq, 0.0) is None
    assert len(r.pending) == reassembly.MAX_PENDING and r.evicted >= 50 - reassembly.MAX_PENDING
    # Too many bytes for one datagram claimed by fragments: refused.
    big = head + bytes([0, 255]) + bytes(60000)
    r.add(big, 7, 0.0)
    with pytest.raises(sleeve.SleeveError):
        r.add(head + bytes([1, 255]) + bytes(60000), 7, 0.0)
    # Unfinished ones expire; a duplicate fragment does not complete anything.
    r2 = reassembly.Reassembler()
    r2.add(frags[0], 9, 0.0)
    assert r2.add(frags[0], 9, 0.1) is None
    r2.add(frags[0], 10, reassembly.TIMEOUT + 1)
    assert list(r2.pending) == [10] and r2.evicted == 1


def test_a_forged_fragment_spoils_a_sealed_datagram_but_smuggles_nothing():
    dg = sleeve.encode(sleeve.name_bytes(A), 5, sleeve.name_bytes(A), sleeve.BROADCAST, [bytes(2000)], KEY)
    frags = sleeve.fragment(dg, 600)
    forged = frags[1][:sleeve.HEADER.size + 2] + os.urandom(len(frags[1]) - sleeve.HEADER.size - 2)
    r = reassembly.Reassembler()
    whole = None
    for f in [frags[0], forged, *frags[2:]]:
        whole = r.add(f, 5, 0.0)
    with pytest.raises(sleeve.SleeveError) as e:
        sleeve.decode_body(whole, 5, KEY)
    assert e.value.reason == "auth"


def test_probe_and_echo_datagrams():
    nonce = os.urandom(8)
    dg = sleeve.probe(sleeve.name_bytes(A), nonce, 672)
    assert len(dg) == 672
    sender, seq, flags = sleeve.peek(dg)
    assert flags & sleeve.F_PROBE and seq.to_bytes(8, "big") == nonce and dg[sleeve.HEADER.size] == sleeve.PROBE
    e = sleeve.echo(sleeve.name_bytes(B), seq, 700)
    assert sleeve.ECHO_BODY.unpack_from(e, sleeve.HEADER.size) == (sleeve.ECHO, 700)


def test_overlay_mtu_is_the_route_mtu_towards_the_peers_minus_the_reserve(monkeypatch):
    routes = {"192.0.2.1": 1500, "192.0.2.2": 1400, "203.0.113.1": 9001}
    monkeypatch.setattr(pmtu, "_kernel_route_mtu", lambda ip: routes.get(ip))
    assert pmtu.overlay_mtu(["192.0.2.1"]) == 1376                       # Weave's number on a 1500 network
    assert pmtu.overlay_mtu(["192.0.2.1:6783", "192.0.2.2"]) == 1276       # the smallest route wins
    assert pmtu.overlay_mtu(["peer.example"]) == 8877                    # names: the default route (9001)
    assert pmtu.overlay_mtu(["198.51.100.9"]) == 1376                    # no route at all: a 1500 underlay
    routes["192.0.2.3"] = 600
    assert pmtu.overlay_mtu(["192.0.2.3"]) == pmtu.OVERLAY_MIN


def test_fragments_joined_is_the_fragments_end_to_end():
    dg = sleeve.encode(sleeve.name_bytes(A), 3, sleeve.name_bytes(A), sleeve.BROADCAST, [os.urandom(5000)], KEY)
    buf, count = sleeve.fragments_joined(dg, 700)
    frags = sleeve.fragment(dg, 700)
    assert count == len(frags) and [buf[i * 700:(i + 1) * 700] for i in range(count)] == frags


def test_split_train_puts_whole_datagrams_together_and_leaves_the_rest_alone():
    d1 = sleeve.encode(sleeve.name_bytes(A), 1, sleeve.name_bytes(A), sleeve.BROADCAST, [os.urandom(5000)], KEY)
    d2 = sleeve.encode(sleeve.name_bytes(A), 2, sleeve.name_bytes(A), sleeve.BROADCAST, [os.urandom(2000)], None)
    f1, f2 = sleeve.fragment(d1, 700), sleeve.fragment(d2, 700)
    hs2 = sleeve.HEADER.size + 2
    assert sleeve.split_train(b"".join(f1), 700) == [d1]
    # Incomplete (the train ended): one Run standing for the 7 fragments, their payloads end to end.
    assert sleeve.split_train(b"".join(f1[:-1]), 700) == [sleeve.Run(f1[0] + b"".join(f[hs2:] for f in f1[1:-1]), 7)]
    full = [f for f in f2 if len(f) == 700]
    run2 = sleeve.Run(full[0] + b"".join(f[hs2:] for f in full[1:]), len(full))
    assert sleeve.split_train(b"".join(full + f1), 700) == [run2, d1]         # part of another, then a whole
    forged = bytearray(b"".join(f1))
    forged[700 * 2 + 3] ^= 1                                                    # one segment claims another sender
    segs = [bytes(forged[o:o + 700]) for o in range(0, len(forged), 700)]
    assert sleeve.split_train(bytes(forged), 700) == [                          # runs around it, it alone
        sleeve.Run(segs[0] + segs[1][hs2:], 2), segs[2],
        sleeve.Run(segs[3] + b"".join(s[hs2:] for s in segs[4:]), len(segs) - 3)]
    assert sleeve.split_train(b"x" * 1400 + b"y" * 10, 700) == [b"x" * 700, b"x" * 700, b"y" * 10]
    assert sleeve.split_train(b"", 700) == []


def test_runs_and_single_fragments_reassemble_and_stay_bounded():
    dg = sleeve.encode(sleeve.name_bytes(A), 4, sleeve.name_bytes(A), sleeve.BROADCAST, [os.urandom(6000)], KEY)
    frags = sleeve.fragment(dg, 700)
    runs = sleeve.split_train(b"".join(frags[:4]), 700) + sleeve.split_train(b"".join(frags[5:]), 700)
    assert [type(r) for r in runs] == [sleeve.Run, sleeve.Run]
    r = reassembly.Reassembler()
    assert r.add(runs[1].fragment, 4, 0.0, runs[1].frags) is None
    assert r.add(runs[0].fragment, 4, 0.0, runs[0].frags) is None
    assert r.add(runs[0].fragment, 4, 0.0, runs[0].frags) is None            # a duplicate changes nothing
    assert r.add(frags[4], 4, 0.0) == dg and not r.pending
    head = frags[0][:sleeve.HEADER.size]
    with pytest.raises(sleeve.SleeveError):                                  # a run beyond the count
        r.add(head + bytes([len(frags) - 1, len(frags)]) + b"x", 4, 0.0, 2)
    r.add(frags[0], 5, 0.0)
    assert r.add(head + bytes([0, len(frags)]) + b"x", 5, 0.0, 3) is None   # overlaps fragment 0: ignored
    assert r.pending[5].have == 1
