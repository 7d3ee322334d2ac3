"""Session crypto: SPAKE2, X25519, transcript-bound secrets, per-direction keys, sequence-number nonces."""

import pytest

from weavenet.mesh.crypto import (
    NONCE_SIZE,
    PAKE_MSG_SIZE,
    EphemeralKey,
    OpeningCipher,
    Pake,
    SealingCipher,
    Session,
    confirm_tag,
    derive_key,
    password_digest,
    seq_nonce,
    session_secret,
    transcript_hash,
)
from weavenet.mesh.errors import ProtocolError


def secrets_for(pw_a: str, pw_b: str, th_a: bytes = b"th", th_b: bytes = b"th") -> tuple[bytes, bytes]:
    """Session secrets computed by the initiator (a) and the responder (b), as the handshake does."""
    a, b = EphemeralKey(), EphemeralKey()
    pa, pb = Pake(password_digest(pw_a)), Pake(password_digest(pw_b))
    sa = session_secret(pa.finish(pb.message), a.shared(b.public), th_a)
    sb = session_secret(pb.finish(pa.message), b.shared(a.public), th_b)
    return sa, sb


def session_pair(pw: str = "pw") -> tuple[Session, Session]:
    sa, sb = secrets_for(pw, pw)
    return Session(sa, outbound=True), Session(sb, outbound=False)


def test_password_digest_accepts_str_and_bytes():
    assert password_digest("s3cret") == password_digest(b"s3cret")
    assert password_digest("a") != password_digest("b")
    assert len(password_digest("")) == 32


def test_same_password_same_secret_different_password_different_secret():
    sa, sb = secrets_for("pw", "pw")
    assert sa == sb and len(sa) == 32
    sa, sb = secrets_for("pw", "other")
    assert sa != sb


def test_secret_bound_to_transcript():
    sa, sb = secrets_for("pw", "pw", th_b=b"tampered")
    assert sa != sb


def test_secret_is_unique_per_exchange():
    assert secrets_for("pw", "pw")[0] != secrets_for("pw", "pw")[0]


def test_pake_messages_are_fresh_and_depend_only_on_entropy_and_password():
    m1, m2 = Pake(password_digest("pw")).message, Pake(password_digest("pw")).message
    assert len(m1) == len(m2) == PAKE_MSG_SIZE and m1[:1] == b"S" and m1 != m2

    def fixed(n: int) -> bytes:
        return bytes(range(n))

    assert Pake(password_digest("pw"), fixed).message == Pake(password_digest("pw"), fixed).message
    assert Pake(password_digest("pw"), fixed).message != Pake(password_digest("pw2"), fixed).message


@pytest.mark.parametrize("msg", [b"", b"S" + bytes(31), b"A" + bytes(32), b"B" + bytes(32), b"S" + b"\xff" * 32,
                                 b"S\x01" + bytes(31), b"S" + bytes(33)])
def test_pake_rejects_bad_messages(msg):
    with pytest.raises(ProtocolError, match="bad PAKE message"):
        Pake(password_digest("pw")).finish(msg)


def test_pake_rejects_own_message():
    p = Pake(password_digest("pw"))
    with pytest.raises(ProtocolError, match="bad PAKE message"):
        p.finish(p.message)


def test_x25519_shared_is_symmetric_and_checked():
    a, b = EphemeralKey(), EphemeralKey()
    assert a.shared(b.public) == b.shared(a.public)
    with pytest.raises(ProtocolError, match="length"):
        a.shared(b"short")
    with pytest.raises(ProtocolError, match="low order"):
        a.shared(bytes(32))


def test_transcript_hash_order_and_framing():
    assert transcript_hash(b"ab", b"c") != transcript_hash(b"c", b"ab")
    assert transcript_hash(b"ab", b"c") != transcript_hash(b"a", b"bc")  # length-prefixed
    assert transcript_hash(b"ab", b"c") == transcript_hash(b"ab", b"c")


def test_session_secret_depends_on_every_input():
    k, d, t = b"k" * 32, b"d" * 32, b"t" * 32
    variants = {session_secret(k, d, t), session_secret(b"K" * 32, d, t), session_secret(k, b"D" * 32, t),
                session_secret(k, d, b"T" * 32)}
    assert len(variants) == 4


def test_confirm_tag_per_role_and_transcript():
    s = b"\x01" * 32
    assert len({confirm_tag(s, "i2r", b"t"), confirm_tag(s, "r2i", b"t"), confirm_tag(s, "i2r", b"u"),
                confirm_tag(b"\x02" * 32, "i2r", b"t")}) == 4
    # Not a session key: the confirmation key is its own derivation.
    assert confirm_tag(s, "i2r", b"t") not in Session(s, True).keys_for("control")


def test_seq_nonce():
    assert len(seq_nonce(0)) == NONCE_SIZE
    assert seq_nonce(1) != seq_nonce(2)
    assert seq_nonce(258)[-2:] == b"\x01\x02"


def test_derive_key_depends_on_label_and_secret():
    s = b"\x01" * 32
    assert derive_key(s, "control:i2r") != derive_key(s, "control:r2i")
    assert derive_key(s, "control:i2r") != derive_key(b"\x02" * 32, "control:i2r")
    assert derive_key(s, "x") == derive_key(s, "x")


def test_per_direction_keys_differ_and_cross_match():
    a, b = session_pair()
    # a's tx seals what b's rx opens, and vice versa; the two directions use different keys.
    ct_ab = a.tx.seal(b"hi")
    ct_ba = b.tx.seal(b"hi")
    assert ct_ab != ct_ba  # same plaintext and seq, different keys
    assert b.rx.open(ct_ab) == b"hi"
    assert a.rx.open(ct_ba) == b"hi"


def test_own_ciphertext_does_not_open_on_own_rx():
    a, _ = session_pair()
    with pytest.raises(ProtocolError):
        a.rx.open(a.tx.seal(b"echo"))


def test_sequence_and_counters():
    a, b = session_pair()
    for i in range(5):
        assert b.rx.open(a.tx.seal(b"m%d" % i)) == b"m%d" % i
    assert a.tx.seq == b.rx.seq == 5


def test_replay_fails():
    a, b = session_pair()
    ct = a.tx.seal(b"once")
    assert b.rx.open(ct) == b"once"
    with pytest.raises(ProtocolError):
        b.rx.open(ct)


def test_reorder_fails():
    a, b = session_pair()
    first, second = a.tx.seal(b"1"), a.tx.seal(b"2")
    with pytest.raises(ProtocolError):
        b.rx.open(second)
    assert b.rx.seq == 0  # a failed open does not advance the counter
    assert b.rx.open(first) == b"1"
    assert b.rx.open(second) == b"2"


def test_tampered_ciphertext_fails():
    a, b = session_pair()
    ct = bytearray(a.tx.seal(b"payload"))
    ct[-1] ^= 1
    with pytest.raises(ProtocolError):
        b.rx.open(bytes(ct))


def test_different_password_sessions_do_not_interoperate():
    sa, sb = secrets_for("pw", "nope")
    a, b = Session(sa, True), Session(sb, False)
    with pytest.raises(ProtocolError):
        b.rx.open(a.tx.seal(b"x"))


def test_keys_for_sleeve():
    a, b = session_pair()
    a_tx, a_rx = a.keys_for("sleeve")
    b_tx, b_rx = b.keys_for("sleeve")
    assert a_tx == b_rx and a_rx == b_tx
    assert a_tx != a_rx
    # Sleeve keys are not the control keys: a control ciphertext does not open under the sleeve key.
    ct = a.tx.seal(b"control")
    with pytest.raises(ProtocolError):
        OpeningCipher(b_rx).open(ct)
    assert OpeningCipher(b_rx).open(SealingCipher(a_tx).seal(b"sleeve")) == b"sleeve"
    assert a.keys_for("other") != a.keys_for("sleeve")


def test_keys_for_control_are_the_session_keys():
    a, b = session_pair()
    control_tx, _ = a.keys_for("control")
    assert control_tx not in a.keys_for("sleeve")
    assert b.rx.open(SealingCipher(control_tx).seal(b"same key")) == b"same key"
