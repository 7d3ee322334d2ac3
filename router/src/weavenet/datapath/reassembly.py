"""Putting sleeve fragments back together, per connection, sans-I/O and bounded.

Fragments come from the network: at most MAX_PENDING datagrams are in progress per connection (the
oldest is evicted), each at most sleeve.MAX_FRAGS fragments and sleeve.MAX_DATAGRAM bytes, and one not
completed within TIMEOUT seconds is dropped. The result is only a candidate datagram: it is
authenticated (sealed) or parsed (plain) like any other afterwards, so a forged fragment can spoil a
datagram (as it could spoil an unfragmented one) but never smuggle anything in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import sleeve

MAX_PENDING = 8
TIMEOUT = 2.0


@dataclass
class _Pending:
    count: int
    started: float
    parts: dict[int, bytes | memoryview] = field(default_factory=dict)   # first index -> payload
    have: int = 0                                                        # bit i set: fragment i is in
    size: int = 0


@dataclass
class Reassembler:
    pending: dict[int, _Pending] = field(default_factory=dict)   # seq -> parts so far (insertion order)
    evicted: int = 0

    def add(self, fragment: bytes, seq: int, now: float, frags: int = 1) -> bytes | None:
        """A fragment (F_FRAG set in its header): the whole datagram (F_FRAG cleared) once its last
        fragment is in, else None. Raises SleeveError("malformed") for a fragment that cannot be one.
        frags > 1: fragment stands for that many consecutive fragments (a ``sleeve.Run`` cut from a GRO
        train, never a datagram from the wire): its FRAG_HEAD index is the first one's."""
        hs = sleeve.HEADER.size
        if len(fragment) < hs + sleeve.FRAG_HEAD.size:
            raise sleeve.SleeveError("malformed")
        index, count = fragment[hs], fragment[hs + 1]     # sleeve.FRAG_HEAD, read directly (hot path)
        if count < 2 or index + frags > count or frags < 1:
            raise sleeve.SleeveError("malformed")
        p = self.pending.get(seq)
        if p is None:
            self._expire(now)
            if len(self.pending) >= MAX_PENDING:
                del self.pending[next(iter(self.pending))]
                self.evicted += 1
            p = self.pending[seq] = _Pending(count, now)
        elif p.count != count:
            del self.pending[seq]
            raise sleeve.SleeveError("malformed")
        bits = ((1 << frags) - 1) << index
        if p.have & bits:
            return None                                  # a duplicate (or overlap): the first one stands
        chunk = memoryview(fragment)[hs + sleeve.FRAG_HEAD.size:]   # no copy: joined once at the end
        p.size += len(chunk)
        if p.size > sleeve.MAX_DATAGRAM:
            del self.pending[seq]
            raise sleeve.SleeveError("malformed")
        p.parts[index] = chunk
        p.have |= bits
        if p.have != (1 << count) - 1:
            return None
        del self.pending[seq]
        head = bytearray(fragment[:hs])
        head[1] &= ~sleeve.F_FRAG & 0xFF
        return b"".join([bytes(head), *(p.parts[i] for i in sorted(p.parts))])

    def _expire(self, now: float) -> None:
        while self.pending:
            seq, p = next(iter(self.pending.items()))
            if now - p.started <= TIMEOUT:
                return
            del self.pending[seq]
            self.evicted += 1
