"""Sliding anti-replay window over 64-bit sequence numbers (like IPsec's, RFC 4303 §3.4.3)."""

from __future__ import annotations


class ReplayWindow:
    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.highest = -1
        self._bits = 0  # bit i set = (highest - i) seen

    def check(self, seq: int) -> bool:
        """True if `seq` is new (not seen, not too old). Does not record it: call accept() after
        the datagram authenticated, so a forged packet cannot move the window."""
        if seq > self.highest:
            return True
        offset = self.highest - seq
        return offset < self.size and not (self._bits >> offset) & 1

    def accept(self, seq: int) -> None:
        if seq > self.highest:
            shift = seq - self.highest
            self._bits = ((self._bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.highest = seq
        else:
            self._bits |= 1 << (self.highest - seq)
