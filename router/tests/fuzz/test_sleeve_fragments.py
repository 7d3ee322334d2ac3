"""Sleeve fragments and path-MTU echoes under random input: reassembly raises SleeveError("malformed") and
nothing else, stays within its bounds, and what it completes is only ever the fragments' own bytes; a
prober fed random echoes never leaves [FLOOR, ceiling]."""

from hypothesis import given
from hypothesis import strategies as st

from weavenet.datapath import pmtu, reassembly, sleeve

NAME = sleeve.name_bytes("02:00:00:00:00:0b")
frag_st = st.tuples(st.integers(0, 20), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=3000))


@given(st.lists(frag_st, max_size=60), st.floats(0, 10))
def test_random_fragments(frags, step):
    r = reassembly.Reassembler()
    now = 0.0
    for seq, index, count, chunk in frags:
        dg = sleeve.HEADER.pack(sleeve.MAGIC, sleeve.F_FRAG, NAME, seq) + bytes([index, count]) + chunk
        now += step
        try:
            whole = r.add(dg, seq, now, 1 + len(chunk) % 4)    # runs of 1-4 fragments too (sleeve.Run)
        except sleeve.SleeveError as e:
            assert e.reason == "malformed"
            continue
        assert len(r.pending) <= reassembly.MAX_PENDING
        assert all(p.size <= sleeve.MAX_DATAGRAM for p in r.pending.values())
        if whole is not None:
            assert whole[:sleeve.HEADER.size] == sleeve.HEADER.pack(sleeve.MAGIC, 0, NAME, seq)
            assert len(whole) - sleeve.HEADER.size <= sleeve.MAX_DATAGRAM


@given(st.integers(0, 100_000), st.lists(st.tuples(st.binary(min_size=8, max_size=8), st.integers(0, 70_000),
                                                   st.floats(0, 30)), max_size=50))
def test_random_echoes_keep_the_prober_in_bounds(ceiling, echoes):
    p = pmtu.Prober(ceiling, now=0.0)
    now = 0.0
    for nonce, size, dt in echoes:
        now += dt
        sent = p.tick(now)
        p.on_reply(nonce, size, now)
        if sent and size % 3 == 0:              # sometimes a real echo of something we did send
            p.on_reply(*sent[0], now)
        assert pmtu.FLOOR <= p.pmtu <= p.ceiling and pmtu.FLOOR <= p.ceiling <= pmtu.CEILING_MAX
        assert all(pmtu.FLOOR <= s <= p.ceiling for s in p.outstanding.values())


@given(st.binary(max_size=4000), st.integers(1, 1500), st.booleans())
def test_random_trains_split_without_surprises(junk, seg, framed):
    train = junk
    if framed and len(junk) > 20:   # make headers plausible so the whole-datagram path is tried
        head = sleeve.HEADER.pack(sleeve.MAGIC, sleeve.F_FRAG, NAME, 1)
        train = b"".join(head + bytes([i, 3]) + junk[:max(0, seg - 18)] for i in range(3))
    out = sleeve.split_train(train, seg)
    dgs = [d.fragment if isinstance(d, sleeve.Run) else d for d in out]
    assert sum(len(d) for d in dgs) <= len(train)
    assert all(len(d) <= max(seg, sleeve.MAX_DATAGRAM) for d in dgs)
    # What a Run claims is what the train holds: consecutive fragments within the count, one header.
    for d in out:
        if isinstance(d, sleeve.Run):
            hs = sleeve.HEADER.size
            assert d.frags >= 2 and d.fragment[hs] + d.frags <= d.fragment[hs + 1]
            assert d.fragment[1] & sleeve.F_FRAG
    r = reassembly.Reassembler()
    for d in out:                   # whatever came out, reassembly takes it or refuses it as malformed
        try:
            if isinstance(d, sleeve.Run):
                r.add(d.fragment, 1, 0.0, d.frags)
            elif len(d) >= sleeve.HEADER.size + 2 and d[1] & sleeve.F_FRAG:
                r.add(d, 1, 0.0)
        except sleeve.SleeveError as e:
            assert e.reason == "malformed"
        assert all(p.size <= sleeve.MAX_DATAGRAM for p in r.pending.values())
