"""IPAM: distributed address allocation with no central server (sans I/O).

**How space is owned.** The allocation range (default 10.32.0.0/12) is a *ring* of tokens; each token
starts a range owned by one router. Every router holds a copy of the ring and gossips it whole; copies
merge per token, the higher version winning, so they converge in any order. A router allocates only
from ranges it owns, so it never has to ask anyone to hand out an address. The ring also carries each
owner's count of free addresses, so a router short of space knows whom to ask.

**Rules** (they are what keeps an address from being handed out twice):

1. Only the owner of a range changes it: it splits it, gives part or all of it to another router
   (bumping the token's version), or updates its free count. Nobody else writes those entries.
2. A router allocates only from its own ranges, the lowest free address of the subnet asked for
   (never the subnet's network or broadcast address).
3. The ring is created once, as `--ipalloc-init` says (`init.py`). `consensus=N` (default: N = the
   peers given at launch + 1): when a router first needs an address, or another asks it for space, it
   proposes, having heard the state of every router it is connected to (none has a ring, or it would
   have adopted theirs); the routers agree by Paxos (`paxos.py`) and, once N//2+1 accepted one
   proposal, each builds the same ring from it, split among the routers the proposer had heard from.
   Two sides of a partition cannot both gather N//2+1. Each router uses the largest N it hears; a
   router alone (N=1) decides by itself, but not if a connected router alone too has a lower name.
   `seed=PEER,...`: every router builds the same ring, split among those peers, at start.
   `observer`: never creates it.
4. A router with no ring asks the routers it can reach; those with a ring answer with it; it then
   asks the owner with the most free space in the subnet, which donates the upper half of its largest
   free run there (the whole run if it is one address). Unanswered requests go to the next owner
   after 2 s.
5. Two copies that cannot be merged without breaking rule 1 are refused with `RingConflict`
   ("inconsistent rings/entries"): two rings created apart (e.g. a router reset and relaunched alone
   while the others kept the old ring), the same token version with different contents, someone else
   changing a range we own, or splitting it.
6. `rmpeer PEER` moves every range of a router that is gone for good to the caller (a version bump,
   which wins everywhere) and records a tombstone in the ring. It is refused for ourselves, for a
   router that is connected, and for one already removed (its ranges already moved): removing it
   again, here or on any router that has heard the first removal, cannot create space twice.

7. An explicit address (`weave run 10.32.1.2/12 ...`) inside the range is used at once; if another
   router owns it, that router is asked to hand over exactly that address (a one-address donation),
   so it cannot allocate it later; if it already has it in use, `ClaimRefused` says so.

**Why no address is handed out twice among routers that can talk.** At any time each range has one
owner in every copy that has heard of it (rule 1 and version order), and only that owner allocates
from it (rule 2). A donation is one owner writing "this part is now yours" before the receiver uses
it. Only the creation of the ring and rmpeer are writes by a non-owner: the first only from a value a
quorum agreed on or a seed list every router shares (rule 3), the second only for a router that is gone (rule 6);
when either assumption was wrong, the copies meet as a `RingConflict` instead of merging silently.

**Under a partition** each side keeps allocating from the space its routers own: the ranges are
disjoint, so there are still no duplicates, and when the partition heals the copies merge. A router
whose side has no free space waits (its allocation stays pending, the request is retried) until it
can reach an owner with space again. Never run rmpeer for a router that is merely on the other side
of a partition: it is still allocating from its space.

**Hostile input.** A message's `from` must be the sender the mesh authenticated (`receive(data, now,
src)`); space goes only to routers the topology can reach, one donation per requester per 2 s (16
one-address claims at once); a merged entry may not leap more than `MAX_VERSION_JUMP` versions (no owner
writes that often; it would pin the entry); a ring holds at most `MAX_RING_ENTRIES` tokens. What breaks
these is skipped and counted in `Allocator.refused`; malformed messages are a ProtocolError. Ring gossip
is relayed whole and unsigned, so a peer holding the mesh password can still forge a small version
bump of a third router's entry: that router then reports a `RingConflict` (rule 5) instead of merging.
Consensus claims are taken only from the router they are about (never relayed), a ballot may not leap
more than `MAX_ROUND_JUMP` rounds, a proposer may not change its value, and an acceptance counts only
with the value its proposer itself accepted; the claims and counts are kept for reachable routers only.

**What the adapter does** with `Allocator`: route `SendTo(peer, data)` to that peer by name; on
`GossipChanged` send `encode_gossip()` to every neighbour (coalesced); feed every IPAM message received
to `receive(data, now, src)` (a `RingConflict` is a ProtocolError: log it, one line, and stop merging
that peer's ring); have the gossip layer (`weavenet.mesh.gossip`) send `encode_gossip()` to each new
neighbour and, every GOSSIP_INTERVAL or so, to a random one; call `peers_changed(connected, reachable,
now)` when the topology changes and `tick(now)` about once a second; complete waiting callers on
`Allocated` / `AllocFailed` (and `cancel` them on the caller's own timeout); on `ClaimRefused` warn and
detach that address. Persist `to_json()` after every call that changed the ring or the allocations,
*before* sending its messages (a crash must not forget a claim or a donation others already heard of),
and restore it with `from_json()` on start.
"""

from .allocator import (
    Allocated,
    Allocator,
    AllocFailed,
    ClaimRefused,
    GossipChanged,
    IpamAction,
    SendTo,
)
from .ring import Ring, RingConflict
from .spec import DEFAULT_RANGE, Allocate, Explicit, parse_address_spec, parse_cidr
from .status import format_ipam_status

__all__ = ["DEFAULT_RANGE", "AllocFailed", "Allocate", "Allocated", "Allocator", "ClaimRefused", "Explicit",
           "GossipChanged", "IpamAction", "Ring", "RingConflict", "SendTo", "format_ipam_status", "parse_address_spec",
           "parse_cidr"]
