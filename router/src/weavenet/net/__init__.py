"""Netlink (pyroute2) plumbing for the data plane: bridge, VXLAN + FDB, TAP, attach/detach, expose.

Every function acts on the network namespace of the calling thread (the "host" namespace the
router runs in); container namespaces are entered with ``netns.run_in_netns``. Calls block: from
asyncio code, use ``asyncio.to_thread``. All operations are idempotent.
"""

from .attach import addresses, attach, detach, ethwe_mac
from .bridge import (
    bridge_fdb_flush_port,
    delete_link,
    ensure_bridge,
    ensure_vxlan,
    fdb_append,
    fdb_delete,
    fdb_entries,
    fdb_flush_dst,
    fdb_replace,
    port_flags,
    set_port_flags,
)
from .expose import expose, exposed, hide
from .netns import resolve_target, run_in_netns
from .tap import Tap

__all__ = [
    "Tap",
    "addresses",
    "attach",
    "bridge_fdb_flush_port",
    "delete_link",
    "detach",
    "ensure_bridge",
    "ensure_vxlan",
    "ethwe_mac",
    "expose",
    "exposed",
    "fdb_append",
    "fdb_delete",
    "fdb_entries",
    "fdb_flush_dst",
    "fdb_replace",
    "hide",
    "port_flags",
    "resolve_target",
    "run_in_netns",
    "set_port_flags",
]
