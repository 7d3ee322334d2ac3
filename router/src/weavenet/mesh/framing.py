"""Length-prefixed frames: 4-byte big-endian length, then the payload.

Frames are bounded so a peer (or garbage on the port) cannot make us buffer without limit.
"""

from __future__ import annotations

import struct

from .errors import ProtocolError

MAX_FRAME = 8 * 1024 * 1024
_LEN = struct.Struct(">I")


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(payload)) + payload


class FrameDecoder:
    """Feed bytes in any chunking, get whole payloads out."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes, max_frames: int | None = None) -> list[bytes]:
        """Whole frames now available; with max_frames, stop early and keep the rest buffered."""
        if not self._buf and len(data) >= 4 and max_frames != 0:
            # The common case (one whole message in one read, e.g. a heartbeat): no buffer round trip.
            (n,) = _LEN.unpack_from(data)
            if len(data) == 4 + n and n <= self._max:
                return [data[4:]]
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= 4 and (max_frames is None or len(out) < max_frames):
            (n,) = _LEN.unpack_from(self._buf)
            if n > self._max:
                raise ProtocolError(f"frame length {n} exceeds limit {self._max}")
            if len(self._buf) < 4 + n:
                break
            out.append(bytes(self._buf[4 : 4 + n]))
            del self._buf[: 4 + n]
        return out

    def take_rest(self) -> bytes:
        """Bytes received after the last whole frame (handed on when the handshake ends)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest
