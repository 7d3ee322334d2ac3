"""The `features` a peer advertises in its hello, checked before anything uses them.

Known keys must have the right type and format (normalised); unknown keys (a newer peer's features)
are passed on unchecked, nobody here reads them, and the whole dict is bounded in size.
"""

from __future__ import annotations

import json
import re

from .errors import ProtocolError

MAX_FEATURE_KEYS = 64      # a hello with more keys than this is not from a weavenet peer
MAX_FEATURES_BYTES = 4096  # as compact JSON
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _unicast_mac(v: object) -> str:
    if not isinstance(v, str) or not _MAC.match(v.lower()):
        raise ValueError("not a MAC address")
    mac = v.lower()
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise ValueError("not a unicast MAC address")
    return mac


_TOKEN = re.compile(r"^[a-z0-9-]{1,32}$")


def _token(v: object) -> str:
    if not isinstance(v, str) or not _TOKEN.match(v):
        raise ValueError("not a short lowercase token")
    return v


# key -> validator returning the normalised value (raises ValueError). Add new features here; an integer
# feature gets a range check the same way.
KNOWN_FEATURES = {
    "fastdp": _unicast_mac,  # the peer's VXLAN device MAC: it runs the kernel fast path
    # The encrypted sleeve's AEAD the peer can receive besides ChaCha20-Poly1305 ("aegis256"; datapath.sleeve).
    "sleeve_aead": _token,
}


def validate_features(raw: object) -> dict:
    """The validated features of a hello (``None``/missing: none). Raises ProtocolError."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError("malformed handshake: features is not an object")
    if len(raw) > MAX_FEATURE_KEYS:
        raise ProtocolError(f"malformed handshake: more than {MAX_FEATURE_KEYS} features")
    try:
        size = len(json.dumps(raw, separators=(",", ":"), allow_nan=False))
    except (ValueError, TypeError, RecursionError):
        raise ProtocolError("malformed handshake: features are not plain JSON") from None
    if size > MAX_FEATURES_BYTES:
        raise ProtocolError(f"malformed handshake: features of {size} bytes exceed {MAX_FEATURES_BYTES}")
    out = dict(raw)
    for key, check in KNOWN_FEATURES.items():
        if key in out:
            try:
                out[key] = check(out[key])
            except ValueError as e:
                raise ProtocolError(f"malformed handshake: feature {key}: {e}") from None
    return out
