"""Connection handshake between two sans-I/O Handshake objects."""

import json

import pytest

from weavenet.mesh.crypto import SealingCipher, password_digest
from weavenet.mesh.errors import HandshakeRefused, ProtocolError
from weavenet.mesh.framing import encode_frame
from weavenet.mesh.handshake import (
    AUTH_TOKEN,
    HEADER_LEN,
    PROTOCOL_ID,
    Handshake,
    HandshakeDone,
    LocalIdentity,
)

A = LocalIdentity("02:00:00:00:00:0a", "alpha", 111, 6783, {"gossip": 1})
B = LocalIdentity("02:00:00:00:00:0b", "beta", 222, 6784)
HEADER = PROTOCOL_ID + bytes([1, 1])


def pw(text):
    return password_digest(text) if text is not None else None


def run(pw_a=None, pw_b=None, a=A, b=B, chunk=None, **kw):
    """Simultaneous open: each round both sides receive what the other sent in the previous round.

    Returns (result_a, result_b), each a HandshakeDone or the ProtocolError raised.
    """
    hs = {"a": Handshake(a, True, pw(pw_a), **kw), "b": Handshake(b, False, pw(pw_b))}
    sent = {"a": hs["a"].initial_bytes(), "b": hs["b"].initial_bytes()}
    result = {}
    for _ in range(5):
        inbox, sent = {"a": sent["b"], "b": sent["a"]}, {"a": b"", "b": b""}
        for me, data in inbox.items():
            if me in result or not data:
                continue
            pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
            for piece in pieces:
                try:
                    out, done = hs[me].receive_data(piece)
                except ProtocolError as e:
                    result[me] = e
                    break
                sent[me] += out
                if done:
                    result[me] = done
                    break
        if len(result) == 2:
            return result["a"], result["b"]
    raise AssertionError(f"handshake did not finish: {result}")


def hello(**fields):
    h = {"name": B.name, "nickname": "beta", "uid": 222, "port": 6784, "features": {}}
    h.update(fields)
    return HEADER + encode_frame(json.dumps(h).encode())


def feed_one(data, password=None):
    return Handshake(A, False, pw(password)).receive_data(data)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_no_password_completes(chunk):
    da, db = run(chunk=chunk)
    assert isinstance(da, HandshakeDone) and isinstance(db, HandshakeDone)
    assert da.session is None and db.session is None
    assert (da.remote.name, da.remote.nickname, da.remote.uid, da.remote.port) == (B.name, "beta", 222, 6784)
    assert (db.remote.name, db.remote.uid, db.remote.features) == (A.name, 111, {"gossip": 1})
    assert da.remote.version == db.remote.version == 1
    assert da.rest == db.rest == b""


@pytest.mark.parametrize("chunk", [None, 1, 13])
def test_same_password_completes_with_interoperable_sessions(chunk):
    da, db = run("secret", "secret", chunk=chunk)
    assert isinstance(da, HandshakeDone) and isinstance(db, HandshakeDone)
    assert da.session.outbound and not db.session.outbound
    assert db.session.rx.open(da.session.tx.seal(b"ping")) == b"ping"
    assert da.session.rx.open(db.session.tx.seal(b"pong")) == b"pong"
    assert da.session.keys_for("sleeve") == db.session.keys_for("sleeve")[::-1]


@pytest.mark.parametrize("chunk", [None, 1])
def test_wrong_password_refused_on_both_sides(chunk):
    ra, rb = run("secret", "other", chunk=chunk)
    for r in (ra, rb):
        assert isinstance(r, HandshakeRefused)
        assert "password differs" in str(r)


@pytest.mark.parametrize(("pw_a", "pw_b"), [("secret", None), (None, "secret")])
def test_password_vs_no_password_is_encryption_mismatch_on_both_sides(pw_a, pw_b):
    ra, rb = run(pw_a, pw_b)
    for r in (ra, rb):
        assert isinstance(r, HandshakeRefused)
        assert "encryption mismatch" in str(r)


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.1\r\n\r\n", b"G", b"weavenet-mesh\x01\x01\x01"])
def test_bad_protocol_header(junk):
    with pytest.raises(ProtocolError, match="protocol header"):
        feed_one(junk)


def test_partial_header_is_buffered():
    hs = Handshake(A, False, None)
    data = hello()
    for i in range(HEADER_LEN + 3):  # header and a bit of the hello, byte by byte
        assert hs.receive_data(data[i : i + 1]) == (b"", None)
    out, done = hs.receive_data(data[HEADER_LEN + 3 :])
    assert out == b"" and done.remote.name == B.name


def test_incompatible_version_ranges_refused():
    for r in run(min_version=2, max_version=3):
        assert isinstance(r, HandshakeRefused) and "no common protocol version" in str(r)
    with pytest.raises(HandshakeRefused, match="no common protocol version"):
        Handshake(A, True, None, min_version=2, max_version=3).receive_data(HEADER)
    with pytest.raises(HandshakeRefused, match="no common protocol version"):
        feed_one(PROTOCOL_ID + bytes([2, 5]))


def test_version_negotiates_highest_common():
    da, db = run(min_version=1, max_version=3)
    assert da.remote.version == db.remote.version == 1
    hs = Handshake(A, False, None, min_version=1, max_version=4)
    _, done = hs.receive_data(PROTOCOL_ID + bytes([2, 3]) + hello()[HEADER_LEN:])
    assert done.remote.version == 3


def test_connecting_to_self_refused():
    with pytest.raises(HandshakeRefused, match="ourself"):
        feed_one(hello(name=A.name, uid=A.uid))


def test_other_peer_with_our_name_refused():
    with pytest.raises(HandshakeRefused, match="our own peer name"):
        feed_one(hello(name=A.name.upper(), uid=999))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b"null",
        b'{"nickname": "x", "uid": 1, "port": 1}',
        b'{"name": "nonsense", "uid": 1, "port": 1}',
        b'{"name": "02:00:00:00:00:0b", "uid": "abc", "port": 1}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1, "port": 0}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1, "port": 65536}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1, "port": 1, "features": [1, 2]}',
    ],
)
def test_malformed_hello(body):
    with pytest.raises(ProtocolError, match="malformed handshake"):
        feed_one(HEADER + encode_frame(body))


@pytest.mark.parametrize(
    "extra",
    [{"encrypt": True}, {"encrypt": True, "pubkey": "zz"}, {"encrypt": True, "pubkey": "00" * 31}],
)
def test_malformed_pubkey(extra):
    with pytest.raises(ProtocolError):
        feed_one(hello(**extra), password="pw")


def test_infinite_uid_is_protocol_error():
    with pytest.raises(ProtocolError):
        feed_one(HEADER + encode_frame(b'{"name": "02:00:00:00:00:0b", "uid": 1e999, "port": 1}'))


def test_all_zero_pubkey_is_protocol_error():
    with pytest.raises(ProtocolError):
        feed_one(hello(encrypt=True, pubkey="00" * 32), password="pw")


def test_oversize_hello_rejected():
    with pytest.raises(ProtocolError):
        feed_one(HEADER + b"\x00\x01\x00\x01")  # 65537-byte hello frame > MAX_HELLO


def test_nickname_truncated():
    _, done = feed_one(hello(nickname="n" * 100))
    assert done.remote.nickname == "n" * 64


def test_rest_after_hello_without_password():
    follow = encode_frame(b"first message") + encode_frame(b"second")[:5]
    out, done = feed_one(hello() + follow)
    assert out == b"" and done.rest == follow


def test_rest_after_auth_with_password():
    a, b = Handshake(A, True, pw("pw")), Handshake(B, False, pw("pw"))
    out_a, done_a = a.receive_data(b.initial_bytes())
    assert done_a is None and out_a  # a's auth frame
    follow = encode_frame(b"hi") + b"\x00\x00"
    out_b, done_b = b.receive_data(a.initial_bytes() + out_a + follow)
    assert done_b.rest == follow
    _, done_a = a.receive_data(out_b + b"\x00\x00\x00")
    assert done_a.rest == b"\x00\x00\x00"


def test_large_first_message_in_same_chunk_as_hello():
    big = encode_frame(b"x" * 70_000)  # fine for the message stream (MAX_FRAME is 8 MiB)
    _, done = feed_one(hello() + big[:4])
    assert done.rest == big[:4]


def test_bad_auth_token_refused():
    a, b = Handshake(A, True, pw("pw")), Handshake(B, False, pw("pw"))
    out_a, _ = a.receive_data(b.initial_bytes())
    _, done_b = b.receive_data(a.initial_bytes() + out_a)
    # b's session sealing at seq 0 under the control key, but with the wrong token.
    forged = encode_frame(SealingCipher(done_b.session.keys_for("control")[0]).seal(AUTH_TOKEN + b"x"))
    with pytest.raises(HandshakeRefused, match="bad authentication token"):
        a.receive_data(forged)
