"""Typed message stream over framing, plain and sealed."""


import pytest

from weavenet.mesh.channel import Channel, MsgType, decode_heartbeat, decode_json, encode_heartbeat, encode_json
from weavenet.mesh.crypto import EphemeralKey, Session, password_digest, session_secret
from weavenet.mesh.errors import ProtocolError
from weavenet.mesh.framing import encode_frame


def channel_pair(encrypted: bool) -> tuple[Channel, Channel]:
    if not encrypted:
        return Channel(None), Channel(None)
    a, b = EphemeralKey(), EphemeralKey()
    pw = password_digest("pw")
    sa = session_secret(pw, a.shared(b.public), b"transcript")  # pw stands in for the PAKE key here
    sb = session_secret(pw, b.shared(a.public), b"transcript")
    return Channel(Session(sa, True)), Channel(Session(sb, False))


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("kind", list(MsgType))
def test_roundtrip_every_type(kind, encrypted):
    tx, rx = channel_pair(encrypted)
    assert tx.encrypted is rx.encrypted is encrypted
    for body in (b"", b"body \x00\xff", bytes(5000)):
        assert rx.feed(tx.encode(kind, body)) == [(kind, body)]


@pytest.mark.parametrize("encrypted", [False, True])
def test_many_messages_byte_by_byte(encrypted):
    tx, rx = channel_pair(encrypted)
    msgs = [(k, str(i).encode()) for i, k in enumerate(list(MsgType) * 3)]
    stream = b"".join(tx.encode(k, b) for k, b in msgs)
    got = []
    for i in range(len(stream)):
        got += rx.feed(stream[i : i + 1])
    assert got == msgs


def test_encryption_hides_body():
    tx, _ = channel_pair(True)
    assert b"secret-body" not in tx.encode(MsgType.GOSSIP, b"secret-body")
    assert b"secret-body" in Channel(None).encode(MsgType.GOSSIP, b"secret-body")


def test_plain_wire_format():
    assert Channel(None).encode(MsgType.CLOSING, b"bye") == encode_frame(b"\x04bye")


def test_unknown_type_skipped_plain():
    rx = Channel(None)
    data = encode_frame(b"\xc8future") + encode_frame(b"\x00zero") + Channel(None).encode(MsgType.GOSSIP, b"g")
    assert rx.feed(data) == [(MsgType.GOSSIP, b"g")]


def test_unknown_type_skipped_encrypted_keeps_sequence():
    tx, rx = channel_pair(True)
    data = tx.encode(200, b"future") + tx.encode(MsgType.HEARTBEAT, b"h")  # type: ignore[arg-type]
    assert rx.feed(data) == [(MsgType.HEARTBEAT, b"h")]


def test_empty_message_rejected():
    with pytest.raises(ProtocolError, match="empty"):
        Channel(None).feed(encode_frame(b""))


def test_tampered_ciphertext_rejected():
    tx, rx = channel_pair(True)
    frame = bytearray(tx.encode(MsgType.GOSSIP, b"payload"))
    frame[10] ^= 0x40
    with pytest.raises(ProtocolError):
        rx.feed(bytes(frame))


def test_replayed_frame_rejected():
    tx, rx = channel_pair(True)
    frame = tx.encode(MsgType.HEARTBEAT, b"x")
    assert rx.feed(frame) == [(MsgType.HEARTBEAT, b"x")]
    with pytest.raises(ProtocolError):
        rx.feed(frame)


def test_plaintext_into_encrypted_channel_rejected():
    _, rx = channel_pair(True)
    with pytest.raises(ProtocolError):
        rx.feed(Channel(None).encode(MsgType.HEARTBEAT, b"x" * 20))


@pytest.mark.parametrize(("ts", "echo", "held"), [(0.0, 0.0, 0.0), (1712345678.25, 17.5, 0.125), (-3.5, 2.0, 1e-6)])
def test_heartbeat_roundtrip(ts, echo, held):
    body = encode_heartbeat(ts, echo, held)
    assert len(body) == 24
    assert decode_heartbeat(body) == (ts, echo, held)


@pytest.mark.parametrize("body", [b"", b"\x00" * 23, b"\x00" * 25])
def test_bad_heartbeat(body):
    with pytest.raises(ProtocolError):
        decode_heartbeat(body)


def test_json_roundtrip_and_errors():
    obj = {"peers": [["02:00:00:00:00:01", 1, 2]], "n": None}
    assert encode_json(obj) == b'{"peers":[["02:00:00:00:00:01",1,2]],"n":null}'
    assert decode_json(encode_json(obj)) == obj
    for bad in (b"", b"{", b"\xff"):
        with pytest.raises(ProtocolError):
            decode_json(bad)
