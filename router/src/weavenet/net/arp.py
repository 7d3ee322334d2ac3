"""ARP on the overlay: gratuitous ARP to announce a new address, probes to find one already in use.

Sent from an AF_PACKET socket in the calling thread's namespace, so callers that add an address
inside a container run this from the same ``run_in_netns`` thread.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import struct
import time

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
ARPOP_REQUEST = 1
BROADCAST = b"\xff" * 6


def gratuitous_arp_frame(mac: str, ip: str) -> bytes:
    """An ARP request for our own address (sender = target = ip), as the kernel's arp_notify sends."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = ipaddress.IPv4Address(ip).packed
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, ARPOP_REQUEST, hw, addr, b"\0" * 6, addr)
    frame = BROADCAST + hw + struct.pack("!H", ETH_P_ARP) + arp
    return frame.ljust(60, b"\0")  # minimum Ethernet frame: it may leave through the router's TAP


def send_gratuitous_arp(ifname: str, mac: str, ip: str) -> bool:
    """Best effort: a lost announcement only delays learning, so failures are logged, not raised."""
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            s.send(gratuitous_arp_frame(mac, ip))
        return True
    except OSError as e:
        log.warning("gratuitous ARP for %s on %s failed: %s", ip, ifname, e)
        return False


ARPOP_REPLY = 2
_ARP = struct.Struct("!HHBBH6s4s6s4s")


def probe_frame(mac: str, ip: str) -> bytes:
    """An ARP probe (RFC 5227): who has ``ip``? asked with sender address 0.0.0.0, so nobody's
    ARP cache learns anything from it, and whoever holds ``ip`` answers."""
    hw = bytes.fromhex(mac.replace(":", ""))
    arp = _ARP.pack(1, 0x0800, 6, 4, ARPOP_REQUEST, hw, b"\0" * 4, b"\0" * 6, ipaddress.IPv4Address(ip).packed)
    return (BROADCAST + hw + struct.pack("!H", ETH_P_ARP) + arp).ljust(60, b"\0")


def reply_sender(frame: bytes) -> tuple[str, str] | None:
    """(sender IP, sender MAC) of an ARP reply frame, else None."""
    if len(frame) < 14 + _ARP.size or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return None
    _, ptype, hlen, plen, op, sha, spa, _, _ = _ARP.unpack_from(frame, 14)
    if op != ARPOP_REPLY or ptype != 0x0800 or hlen != 6 or plen != 4:
        return None
    return str(ipaddress.IPv4Address(spa)), sha.hex(":")


def probe(ifname: str, mac: str, ips: list[str], timeout: float) -> dict[str, str]:
    """Ask the segment behind ``ifname`` who holds ``ips``; {ip: MAC} of those that answered.

    Two probes per address, ``timeout`` seconds of listening in all: a reply lost on a busy mesh is
    possible, so this catches conflicts, it cannot prove their absence.
    """
    if not ips:
        return {}
    wanted, found = set(ips), {}
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((ifname, ETH_P_ARP))
        deadline = time.monotonic() + timeout
        for ip in ips:
            s.send(probe_frame(mac, ip))
        resent = False
        while (left := deadline - time.monotonic()) > 0 and len(found) < len(wanted):
            if not resent and left < timeout / 2:
                for ip in wanted - found.keys():
                    s.send(probe_frame(mac, ip))
                resent = True
            ready, _, _ = select.select([s], [], [], min(left, timeout / 4))
            if not ready:
                continue
            got = reply_sender(s.recv(2048))
            if got is not None and got[0] in wanted and got[1] != mac:
                found[got[0]] = got[1]
    return found
