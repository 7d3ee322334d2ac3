"""weaveDNS (sans I/O): a gossiped record store and a pure DNS answering function.

Rules: each router registers names only for its own containers and is the only one to change those
records; removal leaves a tombstone with a higher order so a late old add cannot resurrect a name;
every router answers from its own copy, so a lookup never waits for the network. Names in the domain
(`weave.local.`) that no record has are NXDOMAIN at once; other names, and PTR lookups of addresses we
have no record for, are forwarded upstream by the adapter.

What the adapter does with `RecordStore`: after `add`/`remove`/`remove_container`/`merge` returned a
non-empty list of changed records, send `encode_gossip(changed)` to every neighbour (coalesce); send
`encode_gossip()` (everything) to each new neighbour and, every ~30 s, to a random one; feed every DNS
gossip message to `merge(data, now, src)` (src: the neighbour the mesh authenticated); call
`peer_gone(peer)` when a router is removed (rmpeer) or has been unreachable long enough to be
forgotten, and `peer_back(peer)` if it reappears; call `gc(now)` about once a minute; on Docker's
die/destroy events call `remove_container(id, now)`. With each UDP query call `answer(...)` (over TCP:
`answer(..., tcp=True)`, the stream cut into queries by `tcp.Deframer`, replies framed by `tcp.frame`): send
its bytes back, forward upstream on None (a bounded number at once: SERVFAIL beyond), drop on b"".
"""

from .answer import answer
from .resolvconf import container_resolv_conf, parse_resolv_conf
from .store import DEFAULT_DOMAIN, Record, RecordStore, qualify

__all__ = ["DEFAULT_DOMAIN", "Record", "RecordStore", "answer", "container_resolv_conf", "parse_resolv_conf",
           "qualify"]
