"""Fuzz the mesh handshake: only ProtocolError (HandshakeRefused is one) escapes, whatever arrives and however
it is chunked, and with a password a hello changed in flight never yields a session."""

import json

from hypothesis import given
from hypothesis import strategies as st

from weavenet.mesh.crypto import password_digest
from weavenet.mesh.errors import HandshakeRefused, ProtocolError
from weavenet.mesh.framing import encode_frame
from weavenet.mesh.handshake import HEADER_LEN, MAX_HELLO, PROTOCOL_ID, Handshake, HandshakeDone, LocalIdentity

A = LocalIdentity("02:00:00:00:00:0a", "alpha", 111, 6783, {"fastdp": "02:00:00:00:00:01"})
B = LocalIdentity("02:00:00:00:00:0b", "beta", 222, 6784)
PW = password_digest("fuzz")
HEADER = PROTOCOL_ID + bytes([2, 2])


def feed(hs: Handshake, data: bytes, cuts: list[int]) -> tuple[bytes, HandshakeDone | None, ProtocolError | None]:
    """Feed ``data`` in pieces split at ``cuts``; returns (all output, result, error)."""
    out, points = b"", sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for lo, hi in zip(points, points[1:], strict=False):
        try:
            o, done = hs.receive_data(data[lo:hi])
        except ProtocolError as e:
            return out + (e.output if isinstance(e, HandshakeRefused) else b""), None, e
        out += o
        if done:
            return out, done, None
    return out, None, None


def check_remote(done: HandshakeDone) -> None:
    r = done.remote
    assert isinstance(r.name, str) and len(r.name) == 17
    assert isinstance(r.nickname, str) and len(r.nickname) <= 64 and r.nickname.isprintable()
    assert type(r.uid) is int and 0 <= r.uid < 2**64
    assert type(r.port) is int and 1 <= r.port <= 65535
    assert isinstance(r.features, dict)


cuts = st.lists(st.integers(0, 70_000), max_size=6)


@given(st.binary(max_size=300), cuts, st.booleans())
def test_arbitrary_bytes(data, cut, password):
    feed(Handshake(A, False, PW if password else None), data, cut)


@given(st.binary(max_size=300), cuts, st.booleans())
def test_arbitrary_bytes_after_valid_header(data, cut, password):
    feed(Handshake(A, False, PW if password else None), HEADER + data, cut)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
hello_fields = st.fixed_dictionaries(
    {},
    optional={"name": st.sampled_from([B.name, A.name, "x", ""]) | json_values,
              "nickname": json_values, "uid": st.integers(-5, 2**65) | json_values,
              "port": st.integers(-5, 70_000) | json_values, "features": json_values,
              "encrypt": json_values, "pubkey": st.text("0123456789abcdefz", max_size=70) | json_values,
              "pake": st.text("0123456789abcdef", max_size=70) | json_values},
)


@given(hello_fields, st.booleans())
def test_structured_hellos(fields, password):
    _, done, _ = feed(Handshake(A, False, PW if password else None),
                      HEADER + encode_frame(json.dumps(fields).encode()), [])
    if done:
        check_remote(done)
        assert done.session is None  # no session without the confirmation round


@given(st.data())
def test_mutated_first_flight_never_gives_a_session(data):
    a, b = Handshake(A, True, PW), Handshake(B, False, PW)
    first = a.initial_bytes()
    mutated = bytearray(first)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, len(mutated)))
        if kind == "flip" and i < len(mutated):
            mutated[i] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del mutated[i : i + data.draw(st.integers(1, 8))]
        else:
            mutated[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    mutated = bytes(mutated)
    cut = data.draw(cuts)
    out_b, done_b, err_b = feed(b, mutated, cut)
    assert done_b is None  # b needs a's confirmation, which a only sends once it has b's hello
    out_a, done_a, _ = feed(a, b.initial_bytes() + out_b, cut)
    if err_b is None and out_a:
        _, done_b, err_b = feed(b, out_a, cut)  # a's confirmation
    if mutated == first:
        assert done_a is not None and done_b is not None
        assert done_b.session.rx.open(done_a.session.tx.seal(b"x")) == b"x"
    else:
        assert done_b is None, f"tampered first flight accepted: {first!r} -> {mutated!r}"
        if done_a is not None:  # b's confirmation was good: b hashed the real header and hello
            assert mutated.startswith(first)


def test_hello_at_size_limit_is_parsed_not_buffered_forever():
    pad = "x" * (MAX_HELLO - 200)
    body = json.dumps({"name": B.name, "uid": 1, "port": 1, "future-field": pad}).encode()  # unknown: ignored
    assert len(body) <= MAX_HELLO
    _, done, err = feed(Handshake(A, False, None), HEADER + encode_frame(body), [HEADER_LEN + 1])
    assert err is None and done is not None
