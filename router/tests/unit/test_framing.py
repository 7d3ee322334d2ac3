"""Length-prefixed framing: chunking independence, limits, leftovers."""

import random

import pytest

from weavenet.mesh.errors import ProtocolError
from weavenet.mesh.framing import MAX_FRAME, FrameDecoder, encode_frame

PAYLOADS = [b"", b"a", b"hello world", bytes(range(256)) * 40, b"\x00\x00\x00\x05", b""]
STREAM = b"".join(encode_frame(p) for p in PAYLOADS)


def feed_chunks(chunks):
    dec = FrameDecoder()
    out = []
    for c in chunks:
        out += dec.feed(c)
    return out, dec.take_rest()


def test_encode_frame_prefixes_big_endian_length():
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"


def test_all_at_once():
    assert feed_chunks([STREAM]) == (PAYLOADS, b"")


def test_byte_by_byte():
    assert feed_chunks([STREAM[i : i + 1] for i in range(len(STREAM))]) == (PAYLOADS, b"")


@pytest.mark.parametrize("seed", range(20))
def test_random_chunking(seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 30)))
    chunks = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
    assert feed_chunks(chunks) == (PAYLOADS, b"")


def test_incomplete_frame_waits():
    dec = FrameDecoder()
    frame = encode_frame(b"payload")
    assert dec.feed(frame[:3]) == []
    assert dec.feed(frame[3:-1]) == []
    assert dec.feed(frame[-1:]) == [b"payload"]


def test_oversize_length_raises_as_soon_as_header_is_known():
    dec = FrameDecoder(max_frame=10)
    assert dec.feed(encode_frame(b"x" * 10)) == [b"x" * 10]
    with pytest.raises(ProtocolError):
        dec.feed(b"\x00\x00\x00\x0b")  # 11 > 10; no payload needed to reject it


def test_default_limit_rejects_huge_length():
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(b"\xff\xff\xff\xff")


def test_encode_refuses_oversize_payload():
    with pytest.raises(ValueError):
        encode_frame(b"\0" * (MAX_FRAME + 1))


def test_take_rest_returns_partial_bytes_and_clears():
    dec = FrameDecoder()
    tail = encode_frame(b"second")[:6]
    assert dec.feed(encode_frame(b"first") + tail) == [b"first"]
    assert dec.take_rest() == tail
    assert dec.take_rest() == b""
    # The decoder is empty again: a fresh frame decodes cleanly.
    assert dec.feed(encode_frame(b"third")) == [b"third"]
