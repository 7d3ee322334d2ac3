# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""weave_status_table: the fleet's status (playbooks/status.yml) as one plain-text table per mesh, from each
host's `weave report` JSON. The reports come from the hosts: every field is type-checked and bounded before
it is printed (a hostile or broken host can garble its own rows, never the table or the run)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

COLUMNS = ("", "HOST", "PEER", "STATE", "DATAPATH", "ENCRYPTED", "RTT", "LOSS", "PROBLEMS")
MAX_TEXT = 60        # any string from a host, cut to this
MAX_ROWS = 1000      # peers per host shown (a router refuses more; a forged report cannot flood the output)
UNHEALTHY = "!!"


def _text(value, limit=MAX_TEXT):
    """A printable one-line string from anything a host sent."""
    if value is None:
        return ""
    s = "".join(c if c.isprintable() else "?" for c in str(value))
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _num(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _rtt(ms):
    ms = _num(ms)
    if ms is None:
        return "-"
    return "<1 ms" if ms < 1 else "%.0f ms" % ms


def _loss(ratio):
    ratio = _num(ratio)
    return "-" if ratio is None else "%.0f%%" % (100 * ratio)


def _parse(raw):
    """A host's report: a dict, JSON text or a registered command result. Returns (router dict, None) or
    (None, (state, why))."""
    if raw is None:
        return None, ("no report", "not in this run (unreachable or failed before)")
    if isinstance(raw, Mapping) and not isinstance(raw, dict):
        raw = dict(raw)
    if isinstance(raw, dict) and raw.get("unreachable"):
        msg = str(raw.get("msg") or "")
        if msg.startswith("Task failed: "):
            msg = msg[len("Task failed: "):]
        return None, ("unreachable", _text(msg, 100))
    if isinstance(raw, dict) and "stdout" in raw and "router" not in raw:   # a registered command result
        if raw.get("failed") or raw.get("rc"):
            return None, ("router down", _text(raw.get("stderr") or raw.get("msg") or "weave report failed", 100))
        raw = raw.get("stdout")
    elif isinstance(raw, dict) and "router" not in raw and set(raw) & {"msg", "module_stderr", "failed", "changed"}:
        # the task did not run the command at all (e.g. no such container for a docker connection)
        why = " ".join(str(raw.get(k) or "") for k in ("msg", "module_stderr")).strip()
        return None, ("failed", _text(why or "weave report did not run", 100))
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None, ("bad report", "weave report: not JSON")
    if not isinstance(raw, dict) or not isinstance(raw.get("router"), dict):
        return None, ("bad report", "weave report: no router section")
    return raw["router"], None


def _host_problems(router):
    out = []
    dp = router.get("dataplane")
    if isinstance(dp, dict) and isinstance(dp.get("health"), str) and dp["health"] != "healthy":
        out.append("datapath %s: %s" % (_text(dp["health"], 20), _text(dp.get("health_reason"), 60)))
    ipam = router.get("ipam")
    consensus = ipam.get("consensus") if isinstance(ipam, dict) else None
    if isinstance(consensus, dict) and consensus.get("state") not in (None, "achieved", "deferred", "observer"):
        out.append("IPAM ring " + _text(consensus.get("state"), 20))
    return out


def _peer_row(host, p):
    if not isinstance(p, dict):
        return [UNHEALTHY, host, "?", "malformed", "", "", "", "", "malformed peer entry"]
    problems = p.get("problems") if isinstance(p.get("problems"), list) else []
    problems = [_text(x, 40) for x in problems[:4]]
    healthy = p.get("healthy") is True
    if not healthy and not problems:
        problems = ["unhealthy"]
    nick, name = _text(p.get("nickname"), 30), _text(p.get("name"), 30)
    peer = "%s(%s)" % (name, nick) if nick else name
    datapath = _text(p.get("datapath"), 12)
    if isinstance(p.get("via"), str) and p["via"]:
        datapath += " via " + _text(p["via"], 30)
    enc = p.get("encrypted")
    return ["" if healthy else UNHEALTHY, host, peer, _text(p.get("state"), 12), datapath,
            "yes" if enc is True else "no" if enc is False else "-", _rtt(p.get("rtt_ms")),
            _loss(p.get("heartbeat_loss")), "; ".join(problems)]


def weave_status_table(reports, hosts=None, var=None):
    """`reports`: host -> report (dict, JSON text or a registered `weave report` result); with `var`, host ->
    variables (hostvars) and the report is that variable. One table: a row per (host, peer) it measures; a host whose report is missing or broken gets one
    '!!' row saying why; a host with no peer gets one row saying so. Hosts in the order of `hosts` (else
    sorted). Ends with a line counting the unhealthy rows."""
    if not isinstance(reports, Mapping):   # a dict, or hostvars
        raise AnsibleFilterError("weave_status_table: expects a dict of host -> weave report, got %s"
                                 % type(reports).__name__)
    order = list(hosts) if hosts is not None else sorted(reports)
    rows = []
    for host in order:
        name = _text(host, 40)
        raw = reports[host] if host in reports else None
        if var is not None and raw is not None:
            raw = raw.get(var)
        router, err = _parse(raw)
        if router is None:
            rows.append([UNHEALTHY, name, "-", err[0], "", "", "", "", err[1]])
            continue
        for problem in _host_problems(router):
            rows.append([UNHEALTHY, name, "(this host)", "", "", "", "", "", problem])
        health = router.get("health") if isinstance(router.get("health"), dict) else {}
        peers = health.get("peers") if isinstance(health.get("peers"), list) else []
        if not peers:
            rows.append(["", name, "-", "alone", "", "", "", "", "no peers"])
        for p in peers[:MAX_ROWS]:
            rows.append(_peer_row(name, p))
        if len(peers) > MAX_ROWS:
            more = "%d more peers not shown" % (len(peers) - MAX_ROWS)
            rows.append([UNHEALTHY, name, "...", "", "", "", "", "", more])
    widths = [max(len(r[i]) for r in rows + [list(COLUMNS)]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [list(COLUMNS)] + rows]
    bad = sum(1 for r in rows if r[0] == UNHEALTHY)
    verdict = "all healthy" if not bad else "%d unhealthy (%s)" % (bad, UNHEALTHY)
    lines.append("%d host(s), %d row(s), %s" % (len(order), len(rows), verdict))
    return "\n".join(lines)


class FilterModule(object):
    def filters(self):
        return {"weave_status_table": weave_status_table}
