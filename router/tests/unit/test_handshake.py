"""Connection handshake between two sans-I/O Handshake objects (protocol 2: SPAKE2 + X25519 + transcript)."""

import json

import pytest
from spake2.spake2 import finalize_SPAKE2_symmetric

from weavenet.mesh.crypto import (
    PAKE_ID,
    confirm_tag,
    password_digest,
    session_secret,
    transcript_hash,
)
from weavenet.mesh.errors import HandshakeRefused, ProtocolError
from weavenet.mesh.framing import encode_frame
from weavenet.mesh.handshake import (
    HEADER_LEN,
    MISMATCH,
    PROTOCOL_ID,
    Handshake,
    HandshakeDone,
    LocalIdentity,
)

A = LocalIdentity("02:00:00:00:00:0a", "alpha", 111, 6783, {"gossip": 1})
B = LocalIdentity("02:00:00:00:00:0b", "beta", 222, 6784)
HEADER = PROTOCOL_ID + bytes([2, 2])


def pw(text):
    return password_digest(text) if text is not None else None


def run(pw_a=None, pw_b=None, a=A, b=B, chunk=None, tamper=None, **kw):
    """Simultaneous open: each round both sides receive what the other sent in the previous round.

    ``tamper(data)`` rewrites a's first flight on its way to b. Returns (result_a, result_b), each a
    HandshakeDone or the ProtocolError raised.
    """
    hs = {"a": Handshake(a, True, pw(pw_a), **kw), "b": Handshake(b, False, pw(pw_b))}
    sent = {"a": hs["a"].initial_bytes(), "b": hs["b"].initial_bytes()}
    if tamper:
        sent["a"] = tamper(sent["a"])
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
                except HandshakeRefused as e:
                    result[me] = e
                    sent[me] += e.output  # what the router still sends before closing
                    break
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


def split_hello(data):
    """(hello dict, bytes after the hello frame) from a side's bytes."""
    n = int.from_bytes(data[HEADER_LEN : HEADER_LEN + 4], "big")
    return json.loads(data[HEADER_LEN + 4 : HEADER_LEN + 4 + n]), data[HEADER_LEN + 4 + n :]


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_no_password_completes(chunk):
    da, db = run(chunk=chunk)
    assert isinstance(da, HandshakeDone) and isinstance(db, HandshakeDone)
    assert da.session is None and db.session is None
    assert (da.remote.name, da.remote.nickname, da.remote.uid, da.remote.port) == (B.name, "beta", 222, 6784)
    assert (db.remote.name, db.remote.uid, db.remote.features) == (A.name, 111, {"gossip": 1})
    assert da.remote.version == db.remote.version == 2
    assert da.rest == db.rest == b""


@pytest.mark.parametrize("chunk", [None, 1, 13])
def test_same_password_completes_with_interoperable_sessions(chunk):
    da, db = run("secret", "secret", chunk=chunk)
    assert isinstance(da, HandshakeDone) and isinstance(db, HandshakeDone)
    assert da.session.outbound and not db.session.outbound
    assert db.session.rx.open(da.session.tx.seal(b"ping")) == b"ping"
    assert da.session.rx.open(db.session.tx.seal(b"pong")) == b"pong"
    assert da.session.keys_for("sleeve") == db.session.keys_for("sleeve")[::-1]


def test_sessions_differ_per_connection():
    da1, _ = run("secret", "secret")
    da2, _ = run("secret", "secret")
    assert da1.session.keys_for("sleeve") != da2.session.keys_for("sleeve")


@pytest.mark.parametrize("chunk", [None, 1])
def test_wrong_password_refused_on_both_sides(chunk):
    ra, rb = run("secret", "other", chunk=chunk)
    for r in (ra, rb):
        assert isinstance(r, HandshakeRefused)
        assert MISMATCH in str(r) and "password differs" in str(r)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"name":"02:00:00:00:00:0a"', b'"name":"02:00:00:00:00:0c"'),
        (b'"port":6783', b'"port":6785'),
        (b'"gossip":1', b'"gossip":2'),
        (b'"nickname":"alpha"', b'"nickname":"alphb"'),
        (b'"uid":111', b'"uid":112'),
        (PROTOCOL_ID + b"\x02\x02", PROTOCOL_ID + b"\x02\x03"),  # version range in the header
    ],
)
def test_hello_rewritten_in_flight_refused_on_both_sides(old, new):
    def tamper(data):
        assert data.count(old) == 1
        return data.replace(old, new)

    ra, rb = run("secret", "secret", tamper=tamper)
    for r in (ra, rb):
        assert isinstance(r, HandshakeRefused) and MISMATCH in str(r)
    # Without a password there is nothing to bind the hello to: it goes through as sent.
    if old.startswith(b'"port"'):
        _, db = run(tamper=tamper)
        assert db.remote.port == 6785


def test_replayed_initiator_transcript_refused():
    a, b = Handshake(A, True, pw("secret")), Handshake(B, False, pw("secret"))
    out_b, _ = b.receive_data(a.initial_bytes())
    out_a, done_a = a.receive_data(b.initial_bytes() + out_b)
    assert done_a.session is not None
    recorded = a.initial_bytes() + out_a
    # The same bytes, against a fresh responder with the same password and identity: its own fresh SPAKE2
    # and X25519 values change the keys, so the recorded confirmation is worthless.
    with pytest.raises(HandshakeRefused, match=MISMATCH):
        Handshake(B, False, pw("secret")).receive_data(recorded)


def offline_recompute(attacker: Handshake, victim_bytes: bytes, candidate: str) -> bytes:
    """The best an attacker that ran a real handshake can do offline: knowing its own SPAKE2 scalar and X25519
    key, compute what the victim's confirmation would be if the victim's password were ``candidate``."""
    spake = attacker._pake._spake
    group, s_elem = spake.params.group, spake.params.S
    h, _ = split_hello(victim_bytes)
    y_msg = bytes.fromhex(h["pake"])[1:]
    cand = pw(candidate)
    k = group.bytes_to_element(y_msg).add(s_elem.scalarmult(-group.password_to_scalar(cand)))
    pake_key = finalize_SPAKE2_symmetric(PAKE_ID, y_msg, spake.outbound_message,
                                         k.scalarmult(spake.xy_scalar).to_bytes(), cand)
    th = transcript_hash(attacker.initial_bytes(), victim_bytes)
    secret = session_secret(pake_key, attacker._key.shared(bytes.fromhex(h["pubkey"])), th)
    return confirm_tag(secret, "r2i", th)


def test_connecting_attacker_cannot_check_guesses_offline():
    # Control: an attacker that happened to guess right can reproduce the victim's confirmation, so the
    # recomputation below is the real one.
    lucky, victim = Handshake(A, True, pw("secret")), Handshake(B, False, pw("secret"))
    confirm = victim.receive_data(lucky.initial_bytes())[0][4:]
    assert offline_recompute(lucky, victim.initial_bytes(), "secret") == confirm
    # An attacker that committed to a wrong guess learns only that: no candidate, not even the right
    # password, reproduces the confirmation it received (with protocol 1, the right one did).
    attacker, victim = Handshake(A, True, pw("guess")), Handshake(B, False, pw("secret"))
    confirm = victim.receive_data(attacker.initial_bytes())[0][4:]
    for candidate in ("guess", "secret", "other"):
        assert offline_recompute(attacker, victim.initial_bytes(), candidate) != confirm


def test_nothing_password_derived_before_the_peer_speaks():
    # What anyone who connects gets unasked: our hello, whose only secret-dependent field is the SPAKE2
    # message (a fresh random point blinded by the password: no offline test is possible against it).
    h, rest = split_hello(Handshake(A, False, pw("secret")).initial_bytes())
    assert rest == b""
    assert set(h) == {"name", "nickname", "uid", "port", "features", "encrypt", "pubkey", "pake"}
    h2, _ = split_hello(Handshake(A, False, pw("secret")).initial_bytes())
    assert h["pake"] != h2["pake"]


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


def test_protocol_1_peer_refused_with_upgrade_hint():
    with pytest.raises(HandshakeRefused, match=r"ours 2-2, theirs 1-1\) \(the peer runs an older weavenet"):
        feed_one(PROTOCOL_ID + bytes([1, 1]) + hello()[HEADER_LEN:], password="pw")


def test_incompatible_version_ranges_refused():
    for r in run(min_version=3, max_version=4):
        assert isinstance(r, HandshakeRefused) and "no common protocol version" in str(r)
    with pytest.raises(HandshakeRefused, match="no common protocol version"):
        Handshake(A, True, None, min_version=3, max_version=4).receive_data(HEADER)
    with pytest.raises(HandshakeRefused, match="no common protocol version"):
        feed_one(PROTOCOL_ID + bytes([3, 5]))


def test_version_negotiates_highest_common():
    da, db = run(min_version=2, max_version=3)
    assert da.remote.version == db.remote.version == 2
    hs = Handshake(A, False, None, min_version=2, max_version=4)
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
        b"[" * 100_00 + b"]" * 100_00,  # nesting deep enough for RecursionError in the parser
        b'{"nickname": "x", "uid": 1, "port": 1}',
        b'{"name": "nonsense", "uid": 1, "port": 1}',
        b'{"name": 5, "uid": 1, "port": 1}',
        b'{"name": "' + b" " * 1000 + b'02:00:00:00:00:0b", "uid": 1, "port": 1}',
        b'{"name": "02:00:00:00:00:0b", "uid": "abc", "port": 1}',
        b'{"name": "02:00:00:00:00:0b", "uid": "1", "port": 1}',
        b'{"name": "02:00:00:00:00:0b", "uid": true, "port": 1}',
        b'{"name": "02:00:00:00:00:0b", "uid": -1, "port": 1}',
        b'{"name": "02:00:00:00:00:0b", "uid": 18446744073709551616, "port": 1}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1.5, "port": 1}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1e999, "port": 1}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1, "port": 0}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1, "port": 65536}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1, "port": 6783.0}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1, "port": 1, "features": [1, 2]}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1, "port": 1, "nickname": 7}',
        b'{"name": "02:00:00:00:00:0b", "uid": 1, "port": 1, "encrypt": "yes"}',
    ],
)
def test_malformed_hello(body):
    with pytest.raises(ProtocolError, match="malformed handshake"):
        feed_one(HEADER + encode_frame(body))


def valid_crypto_fields():
    h, _ = split_hello(Handshake(B, False, pw("pw")).initial_bytes())
    return {"encrypt": True, "pubkey": h["pubkey"], "pake": h["pake"]}


@pytest.mark.parametrize(
    "change",
    [
        {"pubkey": None},
        {"pubkey": "zz" * 32},
        {"pubkey": "00" * 31},
        {"pubkey": 12},
        {"pubkey": "00" * 32},                     # all-zero X25519 point: low order
        {"pake": None},
        {"pake": "00" * 32},                       # one byte short
        {"pake": "41" + "00" * 32},                # side "A": not the symmetric mode
        {"pake": "53" + "ff" * 32},                # not a curve point
        {"pake": "53" + "01" + "00" * 31},         # the identity element
        {"pake": "53" + "ec" + "ff" * 30 + "7f"},  # small-order point (y = -1)
        {"pake": ["53"]},
    ],
)
def test_malformed_crypto_fields(change):
    fields = valid_crypto_fields()
    fields.update(change)
    with pytest.raises(ProtocolError) as e:
        feed_one(hello(**{k: v for k, v in fields.items() if v is not None}), password="pw")
    assert not isinstance(e.value, HandshakeRefused)


def test_reflected_hello_refused():
    hs = Handshake(A, False, pw("pw"))
    with pytest.raises(ProtocolError):  # our own name and, with it, our own SPAKE2 message
        hs.receive_data(hs.initial_bytes())


def test_oversize_hello_rejected():
    with pytest.raises(ProtocolError):
        feed_one(HEADER + b"\x00\x01\x00\x01")  # 65537-byte hello frame > MAX_HELLO


def test_nickname_truncated():
    _, done = feed_one(hello(nickname="n" * 100))
    assert done.remote.nickname == "n" * 64


def test_nickname_control_characters_dropped():
    _, done = feed_one(hello(nickname="evil\nWARNING fake log line\x1b[31m"))
    assert done.remote.nickname == "evilWARNING fake log line[31m"


def test_rest_after_hello_without_password():
    follow = encode_frame(b"first message") + encode_frame(b"second")[:5]
    out, done = feed_one(hello() + follow)
    assert out == b"" and done.rest == follow


def test_rest_after_confirmation_with_password():
    a, b = Handshake(A, True, pw("pw")), Handshake(B, False, pw("pw"))
    out_a, done_a = a.receive_data(b.initial_bytes())
    assert done_a is None and len(out_a) == 4 + 32  # a's confirmation
    follow = encode_frame(b"hi") + b"\x00\x00"
    out_b, done_b = b.receive_data(a.initial_bytes() + out_a + follow)
    assert done_b.rest == follow
    _, done_a = a.receive_data(out_b + b"\x00\x00\x00")
    assert done_a.rest == b"\x00\x00\x00"


def test_large_first_message_in_same_chunk_as_hello():
    big = encode_frame(b"x" * 70_000)  # fine for the message stream (MAX_FRAME is 8 MiB)
    _, done = feed_one(hello() + big[:4])
    assert done.rest == big[:4]


@pytest.mark.parametrize(("confirm", "error"), [(bytes(32), HandshakeRefused), (bytes(31), ProtocolError),
                                                (bytes(33), ProtocolError), (b"", ProtocolError)])
def test_bad_confirmation(confirm, error):
    a, b = Handshake(A, True, pw("pw")), Handshake(B, False, pw("pw"))
    a.receive_data(b.initial_bytes())
    with pytest.raises(error) as e:
        a.receive_data(encode_frame(confirm))
    assert (MISMATCH in str(e.value)) == (error is HandshakeRefused)


def test_truncated_confirmation_waits():
    a, b = Handshake(A, True, pw("pw")), Handshake(B, False, pw("pw"))
    out_b, _ = b.receive_data(a.initial_bytes())
    assert a.receive_data(b.initial_bytes() + out_b[:-1]) [1] is None  # the core's handshake timeout ends it
    _, done = a.receive_data(out_b[-1:])
    assert done.session is not None
