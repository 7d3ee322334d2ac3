"""Session crypto for encrypted meshes (PyNaCl).

Each connection makes an ephemeral X25519 key pair. The session secret mixes the DH result AND the
password, so a peer without the password cannot derive it even though the public keys travel in clear.
Every direction (and every use: control vs. sleeve) gets its own key; nonces are sequence numbers, so
they never repeat under one key and a reordered/replayed control frame fails to decrypt.
"""

from __future__ import annotations

import hashlib
import struct

import nacl.exceptions
from nacl.bindings import crypto_scalarmult
from nacl.public import PrivateKey
from nacl.secret import SecretBox

from .errors import ProtocolError

KEY_SIZE = SecretBox.KEY_SIZE
NONCE_SIZE = SecretBox.NONCE_SIZE
_SEQ = struct.Struct(">Q")


def password_digest(password: str | bytes) -> bytes:
    if isinstance(password, str):
        password = password.encode()
    return hashlib.sha256(b"weavenet-password\x00" + password).digest()


class EphemeralKey:
    def __init__(self) -> None:
        self._priv = PrivateKey.generate()
        self.public = bytes(self._priv.public_key)

    def session_secret(self, peer_public: bytes, password_hash: bytes, initiator_pub: bytes,
                       responder_pub: bytes) -> bytes:
        if len(peer_public) != 32:
            raise ProtocolError("bad public key length")
        try:
            shared = crypto_scalarmult(bytes(self._priv), peer_public)
        except nacl.exceptions.RuntimeError:
            raise ProtocolError("bad public key (low order point)") from None
        # Binding both public keys makes the secret unique to this connection's exchange.
        return hashlib.blake2b(shared + password_hash + initiator_pub + responder_pub,
                               digest_size=32, person=b"weavenet-sess").digest()


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
