"""`weave status ipam` text, like weave's: one line per router with its share and how much is used."""

from __future__ import annotations


def format_ipam_status(status: dict, us: str, nicknames: dict[str, str], reachable: set[str]) -> str:
    """`status`: `Allocator.status()`; `nicknames` and `reachable` come from the mesh."""
    rows = status["peers"]
    if not rows:
        waiting = f", {status['pending']} allocation(s) waiting" if status["pending"] else ""
        return f"No address space claimed yet in {status['range']}{waiting}\n{consensus_line(status)}\n"
    rows = sorted(rows, key=lambda r: (r["peer"] != us, r["peer"]))
    labels = [f"{r['peer']}({nicknames.get(r['peer'], '')})" for r in rows]
    width = max(len(x) for x in labels)
    lines = []
    for label, r in zip(labels, rows, strict=True):
        gone = "" if r["peer"] == us or r["peer"] in reachable else " - unreachable!"
        lines.append(f"{label:<{width}}  {r['addresses']:>8} IPs ({r['percent']:5.1f}% of total) "
                     f"({r['used']} active){gone}")
    return "\n".join(lines) + "\n"


def consensus_line(status: dict) -> str:
    """How the ring gets created, and how far that got: `Consensus: waiting (consensus=3, quorum 2): ...`."""
    c = status.get("consensus") or {}
    state, init = c.get("state", "?"), status.get("init", "?")
    if "quorum" not in c:
        return f"Consensus: {state} ({init})"
    line = f"Consensus: {state} ({init}, quorum {c['quorum']}): heard {len(c['heard'])} other router(s)"
    if c["round"]:
        line += f", round {c['round']} promised by {c['promised']}"
    if c["count_differs"]:
        line += f"; given another consensus=N: {', '.join(c['count_differs'])}"
    return line
