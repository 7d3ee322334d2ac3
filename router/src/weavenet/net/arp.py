"""Gratuitous ARP: tell the overlay (bridge FDBs, peers' ARP caches) about a newly added address.

Sent from an AF_PACKET socket in the calling thread's namespace, so callers that add an address
inside a container run this from the same ``run_in_netns`` thread.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct

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
