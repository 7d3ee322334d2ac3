"""Router settings, shared by `weave launch` and `weave router`."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field

from ..ipam.spec import parse_cidr
from ..mesh.names import DEFAULT_PORT, normalise_address, parse_peer_name
from ..nameserver.store import normalise_domain


@dataclass
class RouterConfig:
    peers: list[str] = field(default_factory=list)
    password: str | None = None
    nickname: str = field(default_factory=socket.gethostname)
    name: str | None = None
    port: int = DEFAULT_PORT
    api_port: int = 6784
    conn_limit: int = 100
    max_peers: int = 1000  # peers a topology may hold (and entries one gossip message may carry)
    discovery: bool = True
    mtu: int = 1376
    fastdp: bool = True
    ipalloc_range: str = "10.32.0.0/12"
    ipalloc_default_subnet: str | None = None
    dns: bool = True
    dns_domain: str = "weave.local."
    dns_ttl: int = 1
    dns_upstream: list[str] = field(default_factory=list)  # default: the host's resolv.conf

    def validate(self) -> None:
        """Raise ValueError with a one-line reason; normalises peers and name in place."""
        if not 1 <= self.port <= 65535:
            raise ValueError(f"invalid port {self.port}: must be 1-65535")
        if not 0 <= self.api_port <= 65535:
            raise ValueError(f"invalid API port {self.api_port}: must be 0-65535 (0 disables)")
        if self.conn_limit < 1:
            raise ValueError(f"invalid connection limit {self.conn_limit}: must be at least 1")
        if not 2 <= self.max_peers <= 100_000:
            raise ValueError(f"invalid max peers {self.max_peers}: must be 2-100000")
        if self.name:
            self.name = parse_peer_name(self.name)
        if not self.nickname or len(self.nickname) > 64 or any(c.isspace() for c in self.nickname):
            raise ValueError(f"invalid nickname {self.nickname!r}: 1-64 characters, no spaces")
        if not 576 <= self.mtu <= 9000:
            raise ValueError(f"invalid MTU {self.mtu}: must be 576-9000")
        if self.password == "":
            raise ValueError("empty password: omit --password to run unencrypted")
        self.peers = [normalise_address(p) for p in self.peers]
        rng = parse_cidr(self.ipalloc_range, "--ipalloc-range")
        self.ipalloc_range = str(rng)
        if self.ipalloc_default_subnet is not None:
            sub = parse_cidr(self.ipalloc_default_subnet, "--ipalloc-default-subnet")
            if not sub.subnet_of(rng):
                raise ValueError(f"--ipalloc-default-subnet {sub} is not inside --ipalloc-range {rng}")
            self.ipalloc_default_subnet = str(sub)
        self.dns_domain = normalise_domain(self.dns_domain)
        if not 0 <= self.dns_ttl <= 86400:
            raise ValueError(f"invalid --dns-ttl {self.dns_ttl}: must be 0-86400 seconds")
        for u in self.dns_upstream:
            try:
                ipaddress.ip_address(u)
            except ValueError:
                raise ValueError(f"invalid --dns-upstream {u!r}: expected an IP address") from None

    def public(self) -> dict:
        """Settings for `weave report` (the Ansible module compares them). Never the password, nor a hash
        of it (crackable offline): only whether there is one. POST /password/check compares a candidate."""
        return {"nickname": self.nickname, "port": self.port, "conn_limit": self.conn_limit,
                "discovery": self.discovery, "mtu": self.mtu, "fastdp": self.fastdp,
                "encrypted": self.password is not None, "ipalloc_range": self.ipalloc_range,
                "ipalloc_default_subnet": self.ipalloc_default_subnet or self.ipalloc_range,
                "dns": self.dns, "dns_domain": self.dns_domain, "dns_ttl": self.dns_ttl}


def password_from_env(explicit: str | None) -> str | None:
    return explicit if explicit is not None else (os.environ.get("WEAVE_PASSWORD") or None)
