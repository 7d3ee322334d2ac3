"""DNS over TCP framing (RFC 1035 4.2.2, RFC 7766), sans I/O: each message is preceded by its length as
two bytes, big-endian. `Deframer` is fed the bytes of one connection as they arrive and returns the whole
queries in them; it refuses (ProtocolError) a query the server will not take, before buffering it.
"""

from __future__ import annotations

import struct

from ..mesh.errors import ProtocolError

MAX_TCP_QUERY = 4096   # a query is one question plus EDNS options: a few hundred bytes; anything bigger is hostile
MIN_QUERY = 12         # a DNS header


def frame(message: bytes) -> bytes:
    """`message` with its 2-byte length prefix (the caller keeps it under 65536: answer's TCP limit)."""
    if len(message) > 0xFFFF:
        raise ValueError(f"DNS message of {len(message)} bytes cannot be framed (at most 65535)")
    return struct.pack(">H", len(message)) + message


class Deframer:
    """The queries of one TCP connection, reassembled from the byte stream. Never holds more than one
    partial query (at most MAX_TCP_QUERY + 1 bytes)."""

    def __init__(self, max_size: int = MAX_TCP_QUERY) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The whole queries completed by `data` (in order); raises ProtocolError on a length that is too
        small to be DNS or bigger than `max_size` (the connection should be closed: the stream is lost)."""
        self._buf += data
        out: list[bytes] = []
        pos = 0   # consumed bytes are dropped once at the end: many small queries in one read stay linear
        while len(self._buf) - pos >= 2:
            (n,) = struct.unpack_from(">H", self._buf, pos)
            if n < MIN_QUERY or n > self.max_size:
                self._buf.clear()
                raise ProtocolError(f"DNS over TCP: message length {n} outside {MIN_QUERY}..{self.max_size}")
            if len(self._buf) - pos < 2 + n:
                break
            out.append(bytes(self._buf[pos + 2:pos + 2 + n]))
            pos += 2 + n
        del self._buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete query held (0 between queries)."""
        return len(self._buf)
