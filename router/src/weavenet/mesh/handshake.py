"""Connection handshake, sans I/O.

Wire format (protocol version 2), sent by both sides at once (no round trip needed before sending):

    PROTOCOL_ID  min_version(1 byte)  max_version(1 byte)
    frame(JSON hello: name, nickname, uid, port, features, encrypt, and with a password: pubkey, pake)

With a password, each side, once it has the other's hello, sends one more frame: a 32-byte key
confirmation MAC over the transcript hash. The session secret needs the SPAKE2 key (so the password:
see crypto.py for why nobody can test guesses offline), the X25519 secret (forward secrecy) and the hash
of both headers and hellos as sent (so a hello rewritten in flight changes the keys). A wrong password
or a tampered hello makes both confirmations fail, so both sides refuse and can say why.

Version 1 (a sealed constant keyed by an unsalted password hash, hellos unauthenticated) is refused.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field

from .crypto import (
    PAKE_MSG_SIZE,
    PUBKEY_SIZE,
    TAG_SIZE,
    EphemeralKey,
    Pake,
    ProtocolError,
    Session,
    confirm_tag,
    session_secret,
    transcript_hash,
)
from .errors import HandshakeRefused
from .features import validate_features
from .framing import FrameDecoder, encode_frame
from .names import parse_peer_name

PROTOCOL_ID = b"weavenet-mesh\x00"
MIN_VERSION = 2
MAX_VERSION = 2
HEADER_LEN = len(PROTOCOL_ID) + 2
MAX_HELLO = 64 * 1024
MAX_NICKNAME = 64
MAX_UID = 2**64 - 1
MISMATCH = "password mismatch or tampered hello"


@dataclass(frozen=True)
class LocalIdentity:
    name: str
    nickname: str
    uid: int
    port: int
    features: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteHello:
    name: str
    nickname: str
    uid: int
    port: int
    version: int
    features: dict


@dataclass
class HandshakeDone:
    remote: RemoteHello
    session: Session | None
    rest: bytes  # bytes after the handshake: the start of the message stream


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _hex_field(h: dict, key: str, size: int) -> bytes:
    v = h.get(key)
    if not isinstance(v, str) or len(v) != 2 * size:
        raise ValueError(f"{key}: expected {size} bytes as hex")
    return bytes.fromhex(v)


class Handshake:
    """Feed it the connection's bytes; it returns bytes to send and, at the end, a HandshakeDone."""

    def __init__(self, local: LocalIdentity, outbound: bool, password_hash: bytes | None,
                 min_version: int = MIN_VERSION, max_version: int = MAX_VERSION) -> None:
        self.local = local
        self.outbound = outbound
        self._min, self._max = min_version, max_version
        self._key = EphemeralKey() if password_hash else None
        self._pake = Pake(password_hash) if password_hash else None
        self._buf = bytearray()
        self._header = b""      # the peer's header exactly as received: part of the transcript
        self._frames = FrameDecoder(MAX_HELLO)
        self._remote: RemoteHello | None = None
        self._secret: bytes | None = None
        self._transcript = b""
        hello: dict = {"name": local.name, "nickname": local.nickname, "uid": local.uid, "port": local.port,
                       "features": local.features, "encrypt": self._key is not None}
        if self._key and self._pake:
            hello["pubkey"] = self._key.public.hex()
            hello["pake"] = self._pake.message.hex()
        header = PROTOCOL_ID + bytes([self._min, self._max])
        self._initial = header + encode_frame(json.dumps(hello, separators=(",", ":")).encode())

    def initial_bytes(self) -> bytes:
        return self._initial

    def receive_data(self, data: bytes) -> tuple[bytes, HandshakeDone | None]:
        """Returns (bytes to send, result once complete). Raises ProtocolError/HandshakeRefused."""
        if not self._header:
            self._buf += data
            if len(self._buf) < HEADER_LEN:
                if not PROTOCOL_ID.startswith(bytes(self._buf[: len(PROTOCOL_ID)])):
                    raise ProtocolError("not a weavenet peer (bad protocol header)")
                return b"", None
            if bytes(self._buf[: len(PROTOCOL_ID)]) != PROTOCOL_ID:
                raise ProtocolError("not a weavenet peer (bad protocol header)")
            rmin, rmax = self._buf[len(PROTOCOL_ID)], self._buf[len(PROTOCOL_ID) + 1]
            self._version = min(self._max, rmax)
            if self._version < max(self._min, rmin):
                older = " (the peer runs an older weavenet: upgrade it)" if rmax < self._min else ""
                raise HandshakeRefused(
                    f"no common protocol version (ours {self._min}-{self._max}, theirs {rmin}-{rmax}){older}")
            self._header = bytes(self._buf[:HEADER_LEN])
            data = bytes(self._buf[HEADER_LEN:])
            self._buf.clear()
        out = b""
        try:
            # One frame at a time: only handshake frames are held to MAX_HELLO; whatever follows
            # belongs to the message layer and is handed over unparsed.
            while frames := self._frames.feed(data, max_frames=1):
                data = b""
                if self._remote is None:
                    out += self._on_hello(frames[0])
                    if self._secret is None:
                        return out, HandshakeDone(self._remote, None, self._frames.take_rest())
                else:
                    session = self._on_confirm(frames[0])
                    return out, HandshakeDone(self._remote, session, self._frames.take_rest())
        except HandshakeRefused as e:
            e.output = out  # still send our confirmation: the peer then sees the mismatch and says so
            raise
        return out, None

    def _on_hello(self, frame: bytes) -> bytes:
        try:
            h = json.loads(frame)
            if not isinstance(h, dict):
                raise ValueError("not an object")
            name, nickname = h.get("name"), h.get("nickname", "")
            uid, port, features = h.get("uid"), h.get("port"), h.get("features") or {}
            their_encrypt = h.get("encrypt", False)
            # Bounded before parse_peer_name, whose cache would otherwise keep huge padded names.
            if not isinstance(name, str) or len(name) > 32:
                raise ValueError("name: expected a peer name")
            if not isinstance(nickname, str):
                raise ValueError("nickname: expected a string")
            if not _is_int(uid) or not 0 <= uid <= MAX_UID:
                raise ValueError(f"uid: expected an integer in 0..{MAX_UID}")
            if not _is_int(port) or not 1 <= port <= 65535:
                raise ValueError(f"port {port!r}")
            if not isinstance(features, dict) or not isinstance(their_encrypt, bool):
                raise ValueError("features/encrypt: wrong type")
            # Printable only: the nickname goes into log lines and `weave status`.
            nickname = "".join(c for c in nickname[:MAX_NICKNAME] if c.isprintable())
            remote = RemoteHello(name=parse_peer_name(name), nickname=nickname, uid=uid,
                                 port=port, version=self._version, features=validate_features(features))
            pub = _hex_field(h, "pubkey", PUBKEY_SIZE) if their_encrypt and self._key else b""
            pake = _hex_field(h, "pake", PAKE_MSG_SIZE) if their_encrypt and self._key else b""
        except (ValueError, RecursionError) as e:  # RecursionError: deeply nested JSON
            raise ProtocolError(f"malformed handshake: {str(e)[:200]}") from None
        self._remote = remote
        who = f"peer {remote.name}({remote.nickname})"
        if remote.name == self.local.name:
            raise HandshakeRefused("cannot connect to ourself" if remote.uid == self.local.uid
                                   else f"{who} has our own peer name")
        if self._key and not their_encrypt:
            raise HandshakeRefused(f"{who} has no password but we have one (encryption mismatch)")
        if not self._key and their_encrypt:
            raise HandshakeRefused(f"{who} has a password but we have none (encryption mismatch)")
        if not self._key or not self._pake:
            return b""
        theirs = self._header + encode_frame(frame)
        ini, resp = (self._initial, theirs) if self.outbound else (theirs, self._initial)
        self._transcript = transcript_hash(ini, resp)
        dh = self._key.shared(pub)
        self._secret = session_secret(self._pake.finish(pake), dh, self._transcript)
        return encode_frame(confirm_tag(self._secret, "i2r" if self.outbound else "r2i", self._transcript))

    def _on_confirm(self, frame: bytes) -> Session:
        assert self._secret is not None and self._remote is not None
        if len(frame) != TAG_SIZE:
            raise ProtocolError(f"malformed handshake: confirmation of {len(frame)} bytes")
        want = confirm_tag(self._secret, "r2i" if self.outbound else "i2r", self._transcript)
        if not hmac.compare_digest(frame, want):
            # One reason for both causes: we cannot tell them apart, and neither may leak which it was.
            raise HandshakeRefused(f"peer {self._remote.name}({self._remote.nickname}) failed authentication: "
                                   f"{MISMATCH} (its password differs from ours, or the hello was modified "
                                   "in flight)")
        return Session(self._secret, self.outbound)
