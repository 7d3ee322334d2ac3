"""Strict decoding of the application messages routers exchange (IPAM and DNS gossip).

Every byte of a message is hostile until checked: anything that does not parse, is too big or has a
field of the wrong type or out of range becomes one `ProtocolError`, never another exception type.
"""

from __future__ import annotations

from ..mesh.channel import decode_json
from ..mesh.errors import ProtocolError
from ..mesh.names import parse_peer_name

MAX_INT = (1 << 53) - 1        # counters and versions stay exact in every JSON implementation


def decode_message(data: bytes, what: str) -> dict:
    """A JSON object, or ProtocolError (the mesh's strict JSON: no NaN/Infinity, bounded size and depth)."""
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError(f"bad {what} message: not bytes")
    msg = decode_json(bytes(data))
    if not isinstance(msg, dict):
        raise ProtocolError(f"bad {what} message: not an object")
    return msg


def peer_name(x: object, what: str = "peer name") -> str:
    """A peer name (ValueError otherwise: callers turn it into their ProtocolError)."""
    if not isinstance(x, str) or len(x) > 32:
        raise ValueError(f"{what} is not a string")
    return parse_peer_name(x)


def uint(x: object, what: str, hi: int = MAX_INT) -> int:
    """A non-negative integer up to `hi`: not a bool, a float or a numeric string."""
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= hi:
        raise ValueError(f"{what} must be an integer in 0..{hi}")
    return x


def text(x: object, what: str, max_len: int) -> str:
    if not isinstance(x, str) or not 0 < len(x) <= max_len or not x.isprintable():
        raise ValueError(f"{what} must be a printable string of 1..{max_len} characters")
    return x
