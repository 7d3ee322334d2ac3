"""Sleeve codec under random and mutated datagrams: peek/decode_body raise SleeveError and nothing else,
with and without a key; what decodes respects the datagram's own bounds."""

from hypothesis import given
from hypothesis import strategies as st

from weavenet.datapath import sleeve

KEY = bytes(range(32))
NAME = sleeve.name_bytes("02:00:00:00:00:0b")
frames_st = st.lists(st.binary(max_size=200), max_size=5)


def decode(dg: bytes, key: bytes | None):
    try:
        _, seq, _ = sleeve.peek(dg)
        out = sleeve.decode_body(dg, seq, key)
    except sleeve.SleeveError as e:
        assert e.reason in ("malformed", "auth")
        return None
    origin, dest, relay_only, frames = out
    assert len(origin) == len(dest) == 6 and isinstance(relay_only, bool)
    assert sum(len(f) + 4 for f in frames) <= len(dg)
    return out


@given(st.binary(max_size=300), st.sampled_from([None, KEY]))
def test_random_bytes(dg, key):
    decode(dg, key)


@given(st.binary(max_size=300), st.sampled_from([0, sleeve.F_ENCRYPTED, sleeve.F_ENCRYPTED | sleeve.F_AEGIS]),
       st.integers(0, 2**64 - 1), st.sampled_from([None, KEY]))
def test_random_body_behind_valid_header(body, flags, seq, key):
    decode(sleeve.HEADER.pack(sleeve.MAGIC, flags, NAME, seq) + body, key)


@given(frames_st, st.integers(0, 2**64 - 1), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                        max_size=4), st.integers(0, 10_000))
def test_mutated_aegis_datagrams(frames, seq, flips, cut):
    if not sleeve.AEGIS_AVAILABLE:
        return
    key = sleeve.aegis_key(KEY)
    orig = sleeve.encode(NAME, seq, NAME, sleeve.BROADCAST, frames, key, aegis=True)
    dg = bytearray(orig)
    for pos, val in flips:
        dg[pos % len(dg)] = val
    dg = bytes(dg[:len(dg) - cut % (len(dg) + 1)])
    out = decode(dg, key)
    if dg == orig:
        assert out is not None and out[3] == frames
    else:
        assert out is None                                  # anything changed (or cut) fails authentication


@given(frames_st, st.sampled_from([None, KEY]), st.integers(0, 2**64 - 1),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
       st.integers(0, 10_000), st.sampled_from([None, KEY]))
def test_mutated_valid_datagrams(frames, key, seq, flips, cut, dec_key):
    orig = sleeve.encode(NAME, seq, NAME, sleeve.BROADCAST, frames, key)
    dg = bytearray(orig)
    for pos, val in flips:
        dg[pos % len(dg)] = val
    dg = bytes(dg[:len(dg) - cut % (len(dg) + 1)])
    out = decode(dg, dec_key)
    if dg == orig and dec_key == key:  # untouched: decodes to what was encoded
        assert out is not None and out[3] == frames
