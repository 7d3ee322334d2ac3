"""Human-readable renderings of the report, shared by the API's /status and the CLI."""

from __future__ import annotations

from collections import Counter

from ..mesh.handshake import MAX_VERSION, MIN_VERSION

STATES = ("established", "pending", "retrying", "failed")


def _peer(name: str | None, nick: str | None) -> str:
    return f"{name}({nick})" if name else ""


def _datapath(dp: dict) -> str:
    """e.g. "healthy (fastdp off: encryption is on)", "degraded (weave-udp-rx dead: ...)"."""
    if not dp:
        return "unknown"
    notes = [dp["health_reason"]] if dp.get("health_reason") else []
    if dp.get("fastdp_off"):
        notes.append(f"fastdp off: {dp['fastdp_off']}")
    if (dp.get("sleeve") or {}).get("lane_off"):     # the sleeve runs, a third as fast: say why
        notes.append(f"sleeve: {dp['sleeve']['lane_off']}")
    return dp.get("health", "unknown") + (f" ({'; '.join(notes)})" if notes else "")


def status_summary(report: dict) -> str:
    r = report["router"]
    states = Counter(c["state"] for c in r["connections"])
    n_est_links = sum(1 for p in r["peers"] for c in p["connections"] if c["established"])
    rows = [
        ("Version", r.get("version", report.get("version", "?"))),
        ("", ""),
        ("Service", "router"),
        ("Protocol", f"weavenet-mesh {MIN_VERSION}..{MAX_VERSION}"),
        ("Name", _peer(r["name"], r["nickname"])),
        ("Encryption", "enabled" if r["encryption"] else "disabled"),
        ("PeerDiscovery", "enabled" if r.get("discovery", True) else "disabled"),
        ("Targets", str(len(r["targets"]))),
        ("Connections", f"{len(r['connections'])} ("
                        + ", ".join(f"{states.get(s, 0)} {s}" for s in STATES) + ")"),
        ("Peers", f"{len(r['peers'])} (with {n_est_links} established connections)"),
        ("Datapath", _datapath(r.get("dataplane") or {})),
    ]
    return "\n".join(f"{k:>15}: {v}" if k else "" for k, v in rows) + "\n"


def status_connections(report: dict) -> str:
    lines = []
    for c in report["router"]["connections"]:
        arrow = "->" if c["outbound"] else "<-"
        extra = []
        if c["state"] == "established":
            extra.append("encrypted" if c.get("encrypted") else "unencrypted")
            for key in ("datapath", "mtu", "pmtu"):   # pmtu: the sleeve's discovered path MTU
                if c.get(key):
                    extra.append(str(c[key]) if key == "datapath" else f"{key}={c[key]}")
            if c.get("rtt_ms") is not None:
                extra.append(f"rtt={c['rtt_ms']:.2f}ms")
        info = " ".join([_peer(c.get("name"), c.get("nickname")) or c.get("info", "")] + extra)
        lines.append(f"{arrow} {c['address']:<24} {c['state']:<12} {info}".rstrip())
    return "\n".join(lines) + ("\n" if lines else "")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def _health_line(h: dict) -> str:
    """One peer's health: "!!" marks an unhealthy one, its problems first."""
    words = [h["state"], _ago(h["state_for_s"])]
    if h["state"] == "connected":
        words += [h["datapath"], "encrypted" if h.get("encrypted") else "unencrypted", f"mtu={h['mtu']}"]
        if h.get("rtt_ms") is not None:
            words.append(f"rtt={h['rtt_ms']:.2f}/{h['rtt_max_ms']:.2f}ms")
        if h.get("heartbeat_loss") is not None:
            words.append(f"loss={h['heartbeat_loss']:.0%}")
    elif h["state"] == "relayed":
        words.append(f"via {h.get('via') or '?'}")
    words += [f"reconnects={h['reconnects']}", f"fallbacks={h['fallbacks']}"]
    if h.get("last_failure"):
        words.append(f"last failure {_ago(h['last_failure_s_ago'])} ago: {h['last_failure']}")
    problems = "; ".join(h.get("problems") or [])
    mark = "!!" if not h.get("healthy", True) else "  "
    head = f"{mark} {_peer(h['name'], h.get('nickname')):<32} " + (f"[{problems}] " if problems else "")
    return head + " ".join(words)


def status_peers(report: dict) -> str:
    """`weave status peers`: one line per peer with its health (unhealthy ones marked "!!"); a router that
    reports no health (an older version) gets the topology's peers and their connections."""
    health = (report["router"].get("health") or {}).get("peers")
    if health is not None:
        return "".join(_health_line(h).rstrip() + "\n" for h in health)
    lines = []
    for p in report["router"]["peers"]:
        lines.append(_peer(p["name"], p["nickname"]))
        for c in p["connections"]:
            arrow = "->" if c["outbound"] else "<-"
            state = "established" if c["established"] else "pending"
            lines.append(f"   {arrow} {c['address']:<24} {_peer(c['name'], c['nickname']):<32} {state}")
    return "\n".join(lines) + ("\n" if lines else "")


def status_targets(report: dict) -> str:
    return "".join(t + "\n" for t in report["router"]["targets"])


def _ps_id(r: dict) -> str:
    return r["id"][:12] if len(r["id"]) == 64 else r["id"]   # a Docker id as docker ps shows it


def ps_plain(rows: list[dict]) -> str:
    """`weave ps` as Weave prints it, for scripts: `ID MAC CIDR...`, one line per running attached container
    (and `weave:expose MAC CIDR...`); stopped ones have no interface, so no line."""
    return "".join(f"{_ps_id(r)} {r['mac'] or '-'} {' '.join(r['cidrs'])}\n"
                   for r in rows if r.get("running", True) and r["cidrs"])


def ps_lines(rows: list[dict]) -> str:
    """`weave ps --format table`: one line per attached container with its name, stopped ones too (and
    weave:expose for the host's own addresses)."""
    out = []
    for r in rows:
        ident = _ps_id(r)
        name = "" if r["name"] in ("weave:expose", "") else r["name"]
        state = "" if r.get("running", True) else "  (stopped)"
        out.append(f"{ident:<13} {name:<20} {r['mac'] or '-':<17} {' '.join(r['cidrs'])}{state}")
    return "".join(line.rstrip() + "\n" for line in out)


def status_dns(report: dict) -> str:
    """`weave status dns`: every name this router knows, like weave's (name, address, container, origin)."""
    dns = report["router"].get("dns")
    if dns is None:
        return "weaveDNS is off (--no-dns)\n"
    rows = sorted(dns["records"], key=lambda r: (r["name"], r["address"]))
    nick = {p["name"]: p.get("nickname", "") for p in report["router"]["peers"]}
    return "".join(f"{r['name']:<30} {r['address']:<15} {r['container'][:12]:<13} {r['origin']}"
                   f"({nick.get(r['origin'], '')})\n" for r in rows)


SECTIONS = {"dns": status_dns, "peers": status_peers, "connections": status_connections, "targets": status_targets}
