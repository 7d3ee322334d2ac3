"""Router settings, shared by `weave launch` and `weave router`: each field's Setting (weaver/settings.py)
says how it is given, checked, shown and compared; nothing else lists them."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from ..ipam.init import parse_init
from ..ipam.spec import parse_cidr
from ..mesh.names import DEFAULT_PORT, format_address, normalise_address, parse_peer_name
from ..nameserver.store import normalise_domain
from .settings import Setting, setting, settings_of


def _nickname(v: str) -> str:
    if not v or len(v) > 64 or any(c.isspace() for c in v):
        raise ValueError("1-64 characters, no spaces")
    return v


def _password(v: str) -> str:
    if v == "":
        raise ValueError("empty password: omit --password to run unencrypted")
    return v


def _domain(v: str) -> str:
    try:
        return normalise_domain(v)
    except ValueError:
        raise ValueError("expected a domain name such as weave.local.") from None


def _ip(v: str) -> str:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError("expected an IP address") from None


def _listen(v: str) -> str:
    """IP:PORT of a listener (IPv4 or [IPv6], 0.0.0.0 allowed); Weave's --metrics-addr spelling."""
    host, sep, port = v.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if not sep or ip is None or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected IP:PORT, e.g. 0.0.0.0:6782")
    return format_address(str(ip), int(port))


@dataclass
class RouterConfig:
    peers: list[str] = setting(list, help="host[:port] of peers to connect to", check=normalise_address,
                               positional=True, public=False, restart=False)
    password: str | None = setting(None, help="encrypt the mesh with this password (or set WEAVE_PASSWORD)",
                                   check=_password, secret=True, public=False)
    nickname: str = setting(socket.gethostname, help="name shown for this peer", check=_nickname,
                            default_text="default: the host name")
    name: str | None = setting(None, help="peer name, MAC-style", check=parse_peer_name, public=False,
                               default_text="default: generated once and persisted")
    port: int = setting(DEFAULT_PORT, help="TCP (and sleeve UDP) port for peer connections", lo=1, hi=65535)
    api_port: int = setting(6784, help="127.0.0.1 port of the HTTP API, 0 = none", lo=0, hi=65535)
    # Weave's --metrics-addr: Prometheus on another host scrapes this; the API itself stays on loopback
    metrics_addr: str | None = setting(None, help="IP:PORT serving GET /metrics only, for a remote Prometheus "
                                       "(e.g. 0.0.0.0:6782)", metavar="IP:PORT", check=_listen,
                                       default_text="default: none (/metrics on the loopback API only)")
    conn_limit: int = setting(100, help="maximum number of connections", lo=1, hi=100_000)
    # peers a topology may hold (and entries one gossip message may carry)
    max_peers: int = setting(1000, help="peers the topology may hold; gossip beyond it is refused", lo=2, hi=100_000)
    discovery: bool = setting(True, help="connect to peers learned by gossip")
    mtu: int | None = setting(None, help="overlay MTU", lo=576, hi=9000,
                              default_text="default: the underlay's route MTU towards the peers minus 124 (1376 on a "
                                           "1500-byte network)")
    fastdp: bool = setting(True, help="use the kernel VXLAN fast path between unencrypted peers")
    ipalloc_range: str = setting("10.32.0.0/12", help="range IPAM allocates from", metavar="CIDR",
                                 check=lambda v: str(parse_cidr(v, "--ipalloc-range")))
    ipalloc_default_subnet: str | None = setting(
        None, help="subnet for net:default", metavar="CIDR", default_text="default: the range",
        check=lambda v: str(parse_cidr(v, "--ipalloc-default-subnet")))
    # restart=False: it only matters until the ring exists (a mesh grown by a host does not restart routers)
    ipalloc_init: str | None = setting(
        None, help="how the IPAM ring is created: consensus=N (N routers agree), seed=PEER,... or observer",
        metavar="MODE", restart=False, default_text="default: consensus=<number of peers given + 1>",
        check=lambda v: str(parse_init(v)))
    dns: bool = setting(True, help="run weaveDNS")
    dns_domain: str = setting("weave.local.", help="domain weaveDNS answers for", check=_domain)
    dns_ttl: int = setting(1, help="TTL of weaveDNS answers in seconds", lo=0, hi=86400)
    dns_upstream: list[str] = setting(list, help="resolver for other names, one per flag", metavar="IP", check=_ip,
                                      default_text="default: the host's /etc/resolv.conf")

    def validate(self) -> None:
        """Raise ValueError with a one-line reason naming the flag; normalises every value in place."""
        for s in SETTINGS:
            setattr(self, s.name, s.normalise(getattr(self, s.name)))
        for s in SETTINGS:
            if getattr(self, s.name) is None and s.default is not None:
                raise ValueError(f"missing {s.flag}")
        sub = self.ipalloc_default_subnet
        if sub is not None and not ipaddress.ip_network(sub).subnet_of(ipaddress.ip_network(self.ipalloc_range)):
            raise ValueError(f"--ipalloc-default-subnet {sub} is not inside --ipalloc-range {self.ipalloc_range}")

    def values(self) -> dict[str, Any]:
        return {s.name: getattr(self, s.name) for s in SETTINGS}

    def public(self) -> dict:
        """Settings for `weave report` (the dry run compares them). Never the password, nor a hash of it
        (crackable offline): only whether there is one. POST /password/check compares a candidate."""
        out = {s.name: getattr(self, s.name) for s in SETTINGS if s.public}
        out["encrypted"] = self.password is not None
        out["ipalloc_default_subnet"] = self.ipalloc_default_subnet or self.ipalloc_range
        return out


SETTINGS: tuple[Setting, ...] = settings_of(RouterConfig)
