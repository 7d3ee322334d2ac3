"""Connection handshake, sans I/O.

Wire format, sent by both sides at once (no round trip needed before sending):

    PROTOCOL_ID  min_version(1 byte)  max_version(1 byte)
    frame(JSON hello: name, nickname, uid, port, features, pubkey?)

With a password each side then sends one encrypted frame holding ``AUTH_TOKEN``; a peer whose password
differs cannot produce it, so both sides see the failure and can say why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .crypto import EphemeralKey, ProtocolError, Session
from .errors import HandshakeRefused
from .framing import FrameDecoder, encode_frame
from .names import parse_peer_name

PROTOCOL_ID = b"weavenet-mesh\x00"
MIN_VERSION = 1
MAX_VERSION = 1
HEADER_LEN = len(PROTOCOL_ID) + 2
MAX_HELLO = 64 * 1024
AUTH_TOKEN = b"weavenet-auth-v1"


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


class Handshake:
    """Feed it the connection's bytes; it returns bytes to send and, at the end, a HandshakeDone."""

    def __init__(self, local: LocalIdentity, outbound: bool, password_hash: bytes | None,
                 min_version: int = MIN_VERSION, max_version: int = MAX_VERSION) -> None:
        self.local = local
        self.outbound = outbound
        self._pw = password_hash
        self._min, self._max = min_version, max_version
        self._key = EphemeralKey() if password_hash else None
        self._buf = bytearray()
        self._header_ok = False
        self._frames = FrameDecoder(MAX_HELLO)
        self._remote: RemoteHello | None = None
        self._session: Session | None = None

    def initial_bytes(self) -> bytes:
        hello = {"name": self.local.name, "nickname": self.local.nickname, "uid": self.local.uid,
                 "port": self.local.port, "features": self.local.features,
                 "encrypt": self._key is not None}
        if self._key:
            hello["pubkey"] = self._key.public.hex()
        header = PROTOCOL_ID + bytes([self._min, self._max])
        return header + encode_frame(json.dumps(hello, separators=(",", ":")).encode())

    def receive_data(self, data: bytes) -> tuple[bytes, HandshakeDone | None]:
        """Returns (bytes to send, result once complete). Raises ProtocolError/HandshakeRefused."""
        if not self._header_ok:
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
                raise HandshakeRefused(
                    f"no common protocol version (ours {self._min}-{self._max}, theirs {rmin}-{rmax})")
            data = bytes(self._buf[HEADER_LEN:])
            self._buf.clear()
            self._header_ok = True
        out = b""
        try:
            # One frame at a time: only handshake frames are held to MAX_HELLO; whatever follows
            # belongs to the message layer and is handed over unparsed.
            while frames := self._frames.feed(data, max_frames=1):
                data = b""
                if self._remote is None:
                    out += self._on_hello(frames[0])
                    if self._session is None:
                        return out, HandshakeDone(self._remote, None, self._frames.take_rest())
                else:
                    self._on_auth(frames[0])
                    return out, HandshakeDone(self._remote, self._session, self._frames.take_rest())
        except HandshakeRefused as e:
            e.output = out  # still send our auth frame: the peer then sees the mismatch and says so
            raise
        return out, None

    def _on_hello(self, frame: bytes) -> bytes:
        try:
            h = json.loads(frame)
            name = parse_peer_name(str(h["name"]))
            remote = RemoteHello(name=name, nickname=str(h.get("nickname", ""))[:64], uid=int(h["uid"]),
                                 port=int(h["port"]), version=self._version,
                                 features=dict(h.get("features") or {}))
            their_encrypt = bool(h.get("encrypt"))
            pub = bytes.fromhex(h["pubkey"]) if their_encrypt else None
        except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as e:
            raise ProtocolError(f"malformed handshake: {e}") from None
        if not 1 <= remote.port <= 65535:
            raise ProtocolError(f"malformed handshake: port {remote.port}")
        self._remote = remote
        who = f"peer {name}({remote.nickname})"
        if name == self.local.name:
            raise HandshakeRefused("cannot connect to ourself" if remote.uid == self.local.uid
                                   else f"{who} has our own peer name")
        if self._key and not their_encrypt:
            raise HandshakeRefused(f"{who} has no password but we have one (encryption mismatch)")
        if not self._key and their_encrypt:
            raise HandshakeRefused(f"{who} has a password but we have none (encryption mismatch)")
        if not self._key:
            return b""
        assert pub is not None and self._pw is not None
        ours = self._key.public
        ipub, rpub = (ours, pub) if self.outbound else (pub, ours)
        secret = self._key.session_secret(pub, self._pw, ipub, rpub)
        self._session = Session(secret, self.outbound)
        return encode_frame(self._session.tx.seal(AUTH_TOKEN))

    def _on_auth(self, frame: bytes) -> None:
        assert self._session is not None and self._remote is not None
        try:
            token = self._session.rx.open(frame)
        except ProtocolError:
            raise HandshakeRefused(f"peer {self._remote.name}({self._remote.nickname}) failed authentication: "
                                   "its password differs from ours") from None
        if token != AUTH_TOKEN:
            raise HandshakeRefused("bad authentication token")
