# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import json

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.weavenet.mesh.plugins.filter.status import MAX_ROWS, MAX_TEXT, weave_status_table


def peer(name, nick, **kw):
    row = {"name": name, "nickname": nick, "state": "connected", "datapath": "fastdp", "via": None,
           "encrypted": True, "rtt_ms": 0.4, "heartbeat_loss": 0.0, "healthy": True, "problems": []}
    row.update(kw)
    return row


def report(*peers, **router):
    return {"version": "0.2.0", "router": {"name": "aa", "health": {"peers": list(peers)},
                                           "dataplane": {"health": "healthy"}, **router}}


def lines(table):
    return table.splitlines()


def test_one_row_per_host_and_peer_with_datapath_encryption_rtt():
    out = lines(weave_status_table({
        "h1": report(peer("bb", "h2"), peer("cc", "h3", datapath="sleeve", encrypted=False, rtt_ms=12.3)),
        "h2": json.dumps(report(peer("aa", "h1"))),                         # JSON text
        "h3": {"rc": 0, "stdout": json.dumps(report(peer("aa", "h1")))},     # a registered command result
    }, ["h1", "h2", "h3"]))
    assert out[0].split() == ["HOST", "PEER", "STATE", "DATAPATH", "ENCRYPTED", "RTT", "LOSS", "PROBLEMS"]
    assert out[1].split() == ["h1", "bb(h2)", "connected", "fastdp", "yes", "<1", "ms", "0%"]
    assert out[2].split() == ["h1", "cc(h3)", "connected", "sleeve", "no", "12", "ms", "0%"]
    assert [r.split()[0] for r in out[3:5]] == ["h2", "h3"]
    assert out[-1] == "3 host(s), 4 row(s), all healthy"


def test_unhealthy_peers_unreachable_hosts_and_dead_routers_are_marked():
    out = weave_status_table({
        "h1": report(peer("cc", "h3", state="relayed", datapath="relayed", via="bb", healthy=False,
                          problems=["direct connection lost (timeout)"], rtt_ms=None, heartbeat_loss=None)),
        "h2": {"unreachable": True, "msg": "Failed to connect to the host via ssh"},
        "h3": {"rc": 1, "stdout": "", "stderr": "weave: router not running"},
    }, ["h1", "h2", "h3", "h4"])
    rows = lines(out)
    assert rows[1].startswith("!!") and "relayed via bb" in rows[1] and "direct connection lost (timeout)" in rows[1]
    assert rows[2].split()[:4] == ["!!", "h2", "-", "unreachable"] and "Failed to connect via ssh" not in rows[2]
    assert rows[2].endswith("Failed to connect to the host via ssh")
    assert rows[3].split()[:5] == ["!!", "h3", "-", "router", "down"] and rows[3].endswith("router not running")
    assert rows[4].split()[:5] == ["!!", "h4", "-", "no", "report"]   # no result at all
    assert rows[-1] == "4 host(s), 4 row(s), 4 unhealthy (!!)"


def test_a_task_that_never_ran_the_command_is_a_failed_row():
    out = lines(weave_status_table({"h1": {"msg": "MODULE FAILURE", "module_stderr": "No such container: h1",
                                           "failed": False}}))
    assert out[1].split()[:4] == ["!!", "h1", "-", "failed"] and out[1].endswith("No such container: h1")


def test_host_problems_datapath_and_ipam_ring():
    out = lines(weave_status_table({"h1": report(dataplane={"health": "degraded", "health_reason": "sleeve thread dead"},
                                                 ipam={"consensus": {"state": "waiting"}})}))
    assert any(r.startswith("!!") and "datapath degraded: sleeve thread dead" in r for r in out)
    assert any(r.startswith("!!") and "IPAM ring waiting" in r for r in out)


def test_hostvars_input_with_var():
    hv = {"h1": {"weave_status_report": {"rc": 0, "stdout": json.dumps(report())}}, "h2": {}}
    out = lines(weave_status_table(hv, ["h1", "h2"], var="weave_status_report"))
    assert "no peers" in out[1] and out[2].startswith("!!") and "no report" in out[2]


@pytest.mark.parametrize("bad", [
    "not json", "[]", json.dumps({"router": "x"}), json.dumps({"router": {"health": {"peers": "x"}}}),
    json.dumps({"router": {"health": {"peers": [1, None, {"name": ["x"]}]}}}),
])
def test_hostile_or_broken_reports_never_raise_and_are_marked(bad):
    out = weave_status_table({"h1": bad})
    assert "h1" in out and len(out) < 2000


def test_host_strings_are_bounded_and_printable():
    evil = "x" * 10_000 + "\n\x1b[31mred"
    out = weave_status_table({"h1": report(peer(evil, evil, state=evil, datapath=evil, healthy=False,
                                                problems=[evil] * 50))})
    assert "\x1b" not in out and len(lines(out)) == 3
    assert all(len(r) < 4 * MAX_TEXT + 200 for r in lines(out))


def test_a_forged_report_cannot_flood_the_output():
    out = lines(weave_status_table({"h1": report(*[peer("p%d" % i, "") for i in range(MAX_ROWS + 50)])}))
    assert len(out) == MAX_ROWS + 3 and "50 more peers not shown" in out[-2]


def test_not_a_dict_is_refused():
    with pytest.raises(AnsibleFilterError, match="expects a dict"):
        weave_status_table(["h1"])
