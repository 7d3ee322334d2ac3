"""Peer names (48-bit, MAC-style) and peer addresses (host[:port])."""

from __future__ import annotations

import functools
import ipaddress
import re
import secrets

DEFAULT_PORT = 6783
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def random_peer_name() -> str:
    """A random unicast, locally administered MAC-style name, like weave's."""
    b = bytearray(secrets.token_bytes(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


@functools.lru_cache(maxsize=4096)
def parse_peer_name(text: str) -> str:
    name = text.strip().lower()
    if not _MAC.match(name):
        raise ValueError(f"invalid peer name {text!r}: expected 6 hex bytes like 02:00:5e:10:00:01")
    if name == "00:00:00:00:00:00":
        raise ValueError("invalid peer name 00:00:00:00:00:00")
    return name


def parse_peer_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Parse ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address; raise ValueError with a clear reason."""
    s = text.strip()
    if not s:
        raise ValueError("empty peer address")
    host, port_s = s, None
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ValueError(f"bad peer address {text!r}: missing ']'")
        host, rest = s[1:end], s[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad peer address {text!r}")
            port_s = rest[1:]
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    port = default_port
    if port_s is not None:
        if not port_s.isdigit():
            raise ValueError(f"bad peer address {text!r}: port {port_s!r} is not a number")
        port = int(port_s)
    if not 1 <= port <= 65535:
        raise ValueError(f"bad peer address {text!r}: port {port} out of range 1-65535")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host or not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
            raise ValueError(f"bad peer address {text!r}: not an IP address or host name") from None
        return host, port
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"bad peer address {text!r}: {ip} cannot be a peer")
    return str(ip), port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalise_address(text: str) -> str:
    return format_address(*parse_peer_address(text))
