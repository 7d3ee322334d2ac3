"""Post-handshake message stream: typed, framed and, with a password, sealed messages. Sans I/O."""

from __future__ import annotations

import json
import math
import struct
from enum import IntEnum

from .crypto import Session
from .errors import ProtocolError
from .framing import FrameDecoder, encode_frame

_HB = struct.Struct(">ddd")
MAX_JSON = 8 * 1024 * 1024  # no JSON message is bigger than a frame


class MsgType(IntEnum):
    HEARTBEAT = 1       # body: sender's clock, and the echo of the last heartbeat it received (for RTT)
    GOSSIP = 3          # body: JSON topology entries
    CLOSING = 4         # body: UTF-8 reason, sent before a deliberate close
    SUMMARY = 5         # body: JSON {name: [incarnation, version]}; answered with the newer entries
    DATAPATH = 6        # opaque to the mesh: the data plane's per-connection control (fast-path status)
    APP = 7             # an application channel (IPAM, DNS): JSON header line, then an opaque payload
    GOSSIP_DELTA = 8    # body: JSON {"deltas": [...]}: changes to topology entries (peers with feature topo_delta)


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
            kind = _KINDS.get(frame[0])   # a dict, not MsgType(): an enum lookup costs ~1 us per message
            if kind is None:
                # Unknown types are skipped so newer peers can add messages without breaking older ones.
                continue
            out.append((kind, frame[1:]))
        return out


_KINDS = {k.value: k for k in MsgType}


def encode_heartbeat(sent_at: float, echo: float = 0.0, held: float = 0.0) -> bytes:
    """`echo`: the peer's own timestamp from its last heartbeat we got (0: none yet), `held`: how
    long ago we got it. The peer's RTT is its now - echo - held; no separate ack messages needed."""
    return _HB.pack(sent_at, echo, held)


def decode_heartbeat(body: bytes) -> tuple[float, float, float]:
    if len(body) != _HB.size:
        raise ProtocolError("bad heartbeat")
    vals = _HB.unpack(body)
    # NaN/inf timestamps would poison RTTs (and JSON reports): refused like any bad message.
    if not (math.isfinite(vals[0]) and math.isfinite(vals[1]) and math.isfinite(vals[2])):
        raise ProtocolError("bad heartbeat: timestamps must be finite")
    return vals


def encode_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    f = float(text)
    if not math.isfinite(f):  # 1e999 parses to inf without going through parse_constant
        raise ValueError(f"number {text[:20]} out of range")
    return f


def decode_json(body: bytes, max_size: int = MAX_JSON) -> object:
    """Strict JSON: UTF-8 only, no NaN/Infinity, bounded size; nesting is bounded by the interpreter's
    recursion limit (refused, not raised) and each caller checks the exact shape it expects. Only
    ProtocolError escapes."""
    if len(body) > max_size:
        raise ProtocolError(f"JSON message of {len(body)} bytes exceeds {max_size}")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProtocolError(f"bad JSON message: {str(e)[:100]}") from None
