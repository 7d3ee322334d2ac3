"""Session crypto for encrypted meshes: SPAKE2 + X25519 at the handshake, PyNaCl secretbox after it.

The password never reaches the wire in any form an eavesdropper or a peer could test guesses against
offline: it only enters SPAKE2 (a password-authenticated key exchange), so whoever talks to us learns
at most whether the ONE password it committed to in its own SPAKE2 message was right. An ephemeral
X25519 exchange runs alongside for forward secrecy, and the session secret also covers the transcript
hash of both hellos, so a rewritten hello yields different keys and fails key confirmation.
Every direction (and every use: control vs. sleeve) gets its own key; nonces are sequence numbers, so
they never repeat under one key and a reordered/replayed control frame fails to decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable

import nacl.exceptions
from nacl.bindings import crypto_scalarmult
from nacl.public import PrivateKey
from nacl.secret import SecretBox
from spake2 import SPAKE2_Symmetric
from spake2.ed25519_basic import NotOnCurve
from spake2.spake2 import SPAKEError

from .errors import ProtocolError

KEY_SIZE = SecretBox.KEY_SIZE
NONCE_SIZE = SecretBox.NONCE_SIZE
PUBKEY_SIZE = 32
PAKE_MSG_SIZE = 33       # SPAKE2 symmetric message: side byte b"S" + an Ed25519 point
TAG_SIZE = 32            # key confirmation MAC
PAKE_ID = b"weavenet-mesh-pake-v2"
_SEQ = struct.Struct(">Q")


def password_digest(password: str | bytes) -> bytes:
    """The router's one password derivation (what MeshConfig.password_hash holds): the SPAKE2 input.

    Only a normalisation (fixed length, domain-separated); the protection against guessing is SPAKE2,
    which never exposes anything computed from this value alone."""
    if isinstance(password, str):
        password = password.encode()
    return hashlib.sha256(b"weavenet-password\x00" + password).digest()


class EphemeralKey:
    """One connection's X25519 key pair (forward secrecy: the private half dies with the handshake)."""

    def __init__(self) -> None:
        self._priv = PrivateKey.generate()
        self.public = bytes(self._priv.public_key)

    def shared(self, peer_public: bytes) -> bytes:
        if len(peer_public) != PUBKEY_SIZE:
            raise ProtocolError("bad public key length")
        try:
            return crypto_scalarmult(bytes(self._priv), peer_public)
        except nacl.exceptions.RuntimeError:
            raise ProtocolError("bad public key (low order point)") from None


class Pake:
    """One side of SPAKE2 in symmetric mode (both mesh peers are equals, either may dial).

    ``entropy`` is only for tests that replay an exact exchange."""

    def __init__(self, password_hash: bytes, entropy: Callable[[int], bytes] = os.urandom) -> None:
        self._spake = SPAKE2_Symmetric(password_hash, idSymmetric=PAKE_ID, entropy_f=entropy)
        self.message = self._spake.start()

    def finish(self, peer_message: bytes) -> bytes:
        """The shared PAKE key (equal on both sides only if the passwords are)."""
        # The library asserts rather than raises on a foreign side byte: check first.
        if len(peer_message) != PAKE_MSG_SIZE or peer_message[:1] != b"S":
            raise ProtocolError("bad PAKE message")
        try:
            return self._spake.finish(peer_message)
        except (SPAKEError, NotOnCurve, ValueError) as e:  # not a point / wrong subgroup / our own message
            raise ProtocolError(f"bad PAKE message ({type(e).__name__})") from None


def transcript_hash(initiator_bytes: bytes, responder_bytes: bytes) -> bytes:
    """Hash of everything both sides sent before confirmation (header with versions, hello), initiator's
    first: both ends hash the same bytes whichever of them computes it. Length-prefixed, so no shifting
    of bytes from one message into the other gives the same hash."""
    h = hashlib.blake2b(digest_size=32, person=b"weavenet-th-v2")
    for part in (initiator_bytes, responder_bytes):
        h.update(_SEQ.pack(len(part)) + part)
    return h.digest()


def session_secret(pake_key: bytes, dh_shared: bytes, transcript: bytes) -> bytes:
    """Needs the PAKE key (password), the X25519 secret (forward secrecy) and the exact transcript."""
    return hashlib.blake2b(dh_shared + transcript, key=pake_key, digest_size=32, person=b"weavenet-sess2").digest()


def confirm_tag(secret: bytes, role: str, transcript: bytes) -> bytes:
    """Key confirmation sent by ``role`` ("i2r" from the initiator, "r2i" from the responder)."""
    return hmac.new(derive_key(secret, "confirm:" + role), transcript, hashlib.sha256).digest()


def derive_key(secret: bytes, label: str) -> bytes:
    """Sub-key for one purpose and direction, e.g. ``control:i2r`` or ``sleeve:r2i``."""
    return hashlib.blake2b(label.encode(), key=secret, digest_size=KEY_SIZE, person=b"weavenet-kdf").digest()


def seq_nonce(seq: int) -> bytes:
    return bytes(NONCE_SIZE - 8) + _SEQ.pack(seq)


class SealingCipher:
    """Encrypts one direction of a stream; the nonce is the message's sequence number."""

    def __init__(self, key: bytes) -> None:
        self._box = SecretBox(key)
        self.seq = 0

    def seal(self, plaintext: bytes) -> bytes:
        ct = self._box.encrypt(plaintext, seq_nonce(self.seq)).ciphertext
        self.seq += 1
        return ct


class OpeningCipher:
    def __init__(self, key: bytes) -> None:
        self._box = SecretBox(key)
        self.seq = 0

    def open(self, ciphertext: bytes) -> bytes:
        try:
            pt = self._box.decrypt(ciphertext, seq_nonce(self.seq))
        except nacl.exceptions.CryptoError:
            raise ProtocolError("message authentication failed") from None
        self.seq += 1
        return pt


class Session:
    """Per-connection keys, derived once at handshake; ``outbound`` picks which direction is ours."""

    def __init__(self, secret: bytes, outbound: bool) -> None:
        self._secret = secret
        self.outbound = outbound
        tx, rx = ("i2r", "r2i") if outbound else ("r2i", "i2r")
        self._tx_label, self._rx_label = tx, rx
        self.tx = SealingCipher(derive_key(secret, "control:" + tx))
        self.rx = OpeningCipher(derive_key(secret, "control:" + rx))

    def keys_for(self, purpose: str) -> tuple[bytes, bytes]:
        """(send key, receive key) for another channel of this connection, e.g. the sleeve."""
        return (derive_key(self._secret, f"{purpose}:{self._tx_label}"),
                derive_key(self._secret, f"{purpose}:{self._rx_label}"))
