"""Underlay source filter for the data plane's UDP ports (nftables, inet family).

The sleeve (UDP, the router's port) and the kernel VXLAN device (UDP 6784) take datagrams from any
address; without a password nothing authenticates them. This table drops UDP to those ports unless
the source is the underlay address of a peer we are connected to (the set ``peers``, which the router
refreshes as connections come and go), and counts what it dropped in the named counter ``dropped``.
IPv6 to those ports is dropped outright: the data plane is IPv4 only.

The table is created once (``ensure``); membership changes replace the set's elements in one ``nft -f``
transaction, so the counter survives and there is no moment with an empty set.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess

TABLE = "weavenet"   # family inet (the isolation rules use a bridge-family table of the same name)
COUNTER = "dropped"


def _check_port(p: int) -> int:
    if not isinstance(p, int) or not 1 <= p <= 65535:
        raise ValueError(f"bad UDP port {p!r}")
    return p


def _elements(peers: set[str] | list[str]) -> str:
    ips = sorted({str(ipaddress.IPv4Address(p)) for p in peers}, key=lambda a: int(ipaddress.IPv4Address(a)))
    return "{ " + ", ".join(ips) + " }" if ips else ""


def render(ports: list[int], peers: set[str] | list[str] = ()) -> str:
    """The whole table as an ``nft -f`` script (replaces an earlier version of it)."""
    plist = ", ".join(str(_check_port(p)) for p in sorted(set(ports)))
    elems = _elements(peers)
    return "\n".join([
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        f"  counter {COUNTER} {{}}",
        "  set peers {",
        "    type ipv4_addr",
        *([f"    elements = {elems}"] if elems else []),
        "  }",
        "  chain input {",
        "    type filter hook input priority filter - 10; policy accept;",
        f"    meta nfproto ipv4 udp dport {{ {plist} }} ip saddr != @peers counter name {COUNTER} drop",
        f"    meta nfproto ipv6 udp dport {{ {plist} }} counter name {COUNTER} drop",
        "  }",
        "}",
    ]) + "\n"


def render_peers(peers: set[str] | list[str]) -> str:
    """Replace the set's members, atomically (one transaction)."""
    elems = _elements(peers)
    return f"flush set inet {TABLE} peers\n" + (f"add element inet {TABLE} peers {elems}\n" if elems else "")


def _nft(script: str, what: str) -> None:
    r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        err = (r.stderr.strip().splitlines() or ["nft failed"])[0]
        raise RuntimeError(f"cannot {what}: {err}")


def ensure(ports: list[int], peers: set[str] | list[str] = ()) -> None:
    _nft(render(ports, peers), "load the data-plane source filter")


def set_peers(peers: set[str] | list[str]) -> None:
    _nft(render_peers(peers), "update the data-plane source filter")


def current_peers() -> set[str]:
    """The set's members now (empty when the table is absent): a relaunched router keeps them until
    its connections are back, rather than cutting off the kernel fast path at start."""
    r = subprocess.run(["nft", "-j", "list", "set", "inet", TABLE, "peers"], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        return set()
    out = set()
    try:
        for item in json.loads(r.stdout)["nftables"]:
            for e in item.get("set", {}).get("elem", []) if isinstance(item, dict) else []:
                with contextlib.suppress(ValueError, TypeError):
                    out.add(str(ipaddress.IPv4Address(e)))
    except (ValueError, KeyError, TypeError, AttributeError):
        return set()
    return out


def dropped() -> int | None:
    """Packets the filter dropped so far (None when the table is absent)."""
    r = subprocess.run(["nft", "-j", "list", "counter", "inet", TABLE, COUNTER], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        return None
    try:
        for item in json.loads(r.stdout)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
    except (ValueError, KeyError, TypeError):
        pass
    return None


def remove() -> None:
    """Drop the table (weave reset); absent is fine."""
    subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True, check=False)
