"""Post-handshake message stream: typed, framed and, with a password, sealed messages. Sans I/O."""

from __future__ import annotations

import json
import struct
from enum import IntEnum

from .crypto import Session
from .errors import ProtocolError
from .framing import FrameDecoder, encode_frame

_HB = struct.Struct(">ddd")


class MsgType(IntEnum):
    HEARTBEAT = 1       # body: sender's clock, and the echo of the last heartbeat it received (for RTT)
    GOSSIP = 3          # body: JSON topology entries
    CLOSING = 4         # body: UTF-8 reason, sent before a deliberate close
    SUMMARY = 5         # body: JSON {name: [incarnation, version]}; answered with the newer entries
    DATAPATH = 6        # opaque to the mesh: the data plane's per-connection control (fast-path status)
    APP = 7             # an application channel (IPAM, DNS): JSON header line, then an opaque payload


class Channel:
    def __init__(self, session: Session | None) -> None:
        self._session = session
        self._decoder = FrameDecoder()

    @property
    def encrypted(self) -> bool:
        return self._session is not None

    def encode(self, kind: MsgType, body: bytes = b"") -> bytes:
        payload = bytes([kind]) + body
        if self._session:
            payload = self._session.tx.seal(payload)
        return encode_frame(payload)

    def feed(self, data: bytes) -> list[tuple[MsgType, bytes]]:
        out = []
        for frame in self._decoder.feed(data):
            if self._session:
                frame = self._session.rx.open(frame)
            if not frame:
                raise ProtocolError("empty message")
            try:
                kind = MsgType(frame[0])
            except ValueError:
                # Unknown types are skipped so newer peers can add messages without breaking older ones.
                continue
            out.append((kind, frame[1:]))
        return out


def encode_heartbeat(sent_at: float, echo: float = 0.0, held: float = 0.0) -> bytes:
    """`echo`: the peer's own timestamp from its last heartbeat we got (0: none yet), `held`: how
    long ago we got it. The peer's RTT is its now - echo - held; no separate ack messages needed."""
    return _HB.pack(sent_at, echo, held)


def decode_heartbeat(body: bytes) -> tuple[float, float, float]:
    if len(body) != _HB.size:
        raise ProtocolError("bad heartbeat")
    return _HB.unpack(body)


def encode_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def decode_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError as e:
        raise ProtocolError(f"bad JSON message: {e}") from None
