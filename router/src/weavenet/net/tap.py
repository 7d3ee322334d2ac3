"""The router's TAP port on the bridge: how the userspace datapath ("sleeve") sees container frames.

With IFF_VNET_HDR and offloads enabled, the kernel hands over (and accepts) GSO super-frames of up
to 64 KiB prefixed by a 10-byte ``virtio_net_hdr``, instead of segmenting everything to the MTU
first: far fewer reads and writes per byte. The fd stays blocking because a dedicated datapath
thread does blocking reads.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

from .bridge import apply_port_flags
from .links import check_ifname, check_mtu, iproute, link_mac, netlink_errors, require_link, wait_forwarding

TUN_DEVICE = "/dev/net/tun"
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
# _IOW('T', nr, int): 0x40000000 | sizeof(int) << 16 | ord('T') << 8 | nr
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
VNET_HDR_LEN = 10  # struct virtio_net_hdr, without num_buffers
TXQUEUELEN = 10000  # the datapath thread may lag behind a burst; drop late rather than early


@dataclass
class Tap:
    fd: int
    name: str
    mac: str
    vnet_hdr: bool

    @classmethod
    def open(cls, name: str = "weave-tap", bridge: str = "weave", mtu: int = 1376, vnet_hdr: bool = True) -> Tap:
        """Create the TAP in the calling thread's namespace and plug it into ``bridge``.

        The device lives as long as the fd (it is not persistent), so a crashed router leaves no
        TAP behind and reopening after ``close()`` works.
        """
        check_ifname(name)
        check_mtu(mtu)
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        try:
            actual = _tunsetiff(fd, name, IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0))
            if vnet_hdr:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                # Passed by value, not by pointer. Tells the kernel we accept partial checksums and TSO.
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            mac = _plug(actual, bridge, mtu)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd=fd, name=actual, mac=mac, vnet_hdr=vnet_hdr)

    def read(self, bufsize: int = 65550) -> bytes:
        """One frame (with vnet_hdr: a 10-byte virtio_net_hdr, then the frame). Blocks."""
        return os.read(self.fd, bufsize)

    def write(self, frame: bytes) -> None:
        """Inject one frame into the bridge (with vnet_hdr it must start with the 10-byte header)."""
        os.write(self.fd, frame)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        """Close the fd, which also deletes the device (and its bridge port)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tunsetiff(fd: int, name: str, flags: int) -> str:
    ifr = struct.pack("16sH22x", name.encode(), flags)
    try:
        ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise RuntimeError(f"TAP {name} is already open elsewhere") from None
        if e.errno == errno.EINVAL:
            raise RuntimeError(f"cannot create TAP {name}: a link of that name exists and is not a TAP") from None
        raise RuntimeError(f"cannot create TAP {name}: {e.strerror}") from None
    return ifr[:16].rstrip(b"\0").decode()


def _plug(name: str, bridge: str, mtu: int) -> str:
    with iproute() as ipr:
        br = require_link(ipr, bridge, kind="bridge")["index"]
        index = require_link(ipr, name)["index"]
        with netlink_errors(f"cannot plug TAP {name} into {bridge}"):
            ipr.link("set", index=index, mtu=mtu, txqlen=TXQUEUELEN, master=br, state="up")
        # Isolated: the router's port must not exchange frames with the (also isolated) VXLAN port.
        apply_port_flags(ipr, index, isolated=True, learning=True)
        wait_forwarding(ipr, index)
        return link_mac(require_link(ipr, name))
