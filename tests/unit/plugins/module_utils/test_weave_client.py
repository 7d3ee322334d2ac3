# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import json

import pytest

from ansible_collections.weavenet.mesh.plugins.module_utils.weave_client import (
    WeaveClient,
    WeaveError,
    address_plan,
    cidrs_plan,
    find_container,
    launch_args,
    normalize_addresses,
    normalize_cidr,
    normalize_peer,
    normalize_peers,
    peers_plan,
    router_settings_diff,
    running_config,
)


@pytest.mark.parametrize("given,want", [
    ("192.0.2.1", "192.0.2.1:6783"),
    ("192.0.2.1:7000", "192.0.2.1:7000"),
    (" host-a ", "host-a:6783"),
    ("fe80::1", "[fe80::1]:6783"),
    ("[fe80::1]", "[fe80::1]:6783"),
    ("[fe80::1]:7000", "[fe80::1]:7000"),
])
def test_normalize_peer(given, want):
    assert normalize_peer(given) == want


@pytest.mark.parametrize("bad", ["", "host:port", "host:0", "host:70000"])
def test_normalize_peer_rejects(bad):
    with pytest.raises(WeaveError):
        normalize_peer(bad)


def test_normalize_peers_dedups_and_keeps_order():
    assert normalize_peers(["b", "a:6783", "a"]) == ["b:6783", "a:6783"]


def test_normalize_cidr():
    assert normalize_cidr("10.0.0.1/24") == "10.0.0.1/24"
    for bad in ("10.0.0.1", "10.0.0.300/24", "x/24"):
        with pytest.raises(WeaveError):
            normalize_cidr(bad)


class RunModule(object):
    """A module whose run_command answers like `weave` would and records what it was given."""

    def __init__(self, rc, out, err=""):
        self.params = dict(weave_bin="/x/weave", rundir="/run/w1", datadir=None)
        self.answer = (rc, out, err)
        self.calls = []

    def run_command(self, argv, environ_update=None):
        self.calls.append((argv, dict(environ_update or {})))
        return self.answer


def test_password_matches_passes_the_password_in_the_environment_only():
    m = RunModule(0, json.dumps({"matches": True}) + "\n")
    assert WeaveClient(m).password_matches("s3cret") is True
    (argv, env), = m.calls
    assert argv == ["/x/weave", "password-check"] and "s3cret" not in " ".join(argv)
    assert env == {"WEAVE_RUNDIR": "/run/w1", "WEAVE_PASSWORD": "s3cret"}
    assert WeaveClient(RunModule(0, '{"matches": false}')).password_matches("x") is False


@pytest.mark.parametrize("rc, out, err, want", [
    (1, "", "weave: the running router cannot check passwords (it predates /password/check; restart it)", None),
    (2, "", "weave: argument COMMAND: invalid choice: 'password-check' (choose from ...)", None),
])
def test_password_matches_none_when_the_router_cannot_tell(rc, out, err, want):
    assert WeaveClient(RunModule(rc, out, err)).password_matches("pw") is want


@pytest.mark.parametrize("rc, out, err, says", [
    (1, "", "weave: cannot read API token /run/w1/api-token (is the router running, are you root?)", "API token"),
    (0, "yes", "", "unexpected"),
    (0, '{"matches": "yes"}', "", "unexpected"),
])
def test_password_matches_failures_are_one_line(rc, out, err, says):
    with pytest.raises(WeaveError, match=says):
        WeaveClient(RunModule(rc, out, err)).password_matches("pw")


REPORT_OLD = {"nickname": "h1", "conn_limit": 100, "discovery": True, "port": 6783, "encryption": True,
              "dataplane": {"mtu": 1376, "fastdp": True}}
CONFIG = {"nickname": "h1", "port": 6783, "conn_limit": 100, "discovery": True, "mtu": 1376, "fastdp": True,
          "encrypted": True}


def test_running_config_prefers_config_and_falls_back():
    assert running_config({"config": CONFIG, "nickname": "other"})["nickname"] == "h1"
    cfg = running_config(REPORT_OLD)
    assert cfg == {"nickname": "h1", "conn_limit": 100, "discovery": True, "mtu": 1376, "fastdp": True,
                   "port": 6783, "encrypted": True}


def test_same_settings_no_restart():
    desired = {"nickname": "h1", "conn_limit": 100, "discovery": True, "mtu": 1376, "fastdp": True, "port": 6783}
    assert router_settings_diff(desired, CONFIG, "pw") == []


def test_unset_settings_are_not_compared():
    assert router_settings_diff({"mtu": None, "nickname": None}, CONFIG, "pw") == []


def test_changed_settings_need_restart():
    assert router_settings_diff({"mtu": 1400, "fastdp": False}, CONFIG, "pw") == ["mtu", "fastdp"]


def test_encryption_and_password_changes():
    assert router_settings_diff({}, CONFIG, None) == ["encryption"]
    assert router_settings_diff({}, dict(CONFIG, encrypted=False), "pw") == ["encryption"]
    assert router_settings_diff({}, CONFIG, "other", password_matches=False) == ["password"]
    assert router_settings_diff({}, CONFIG, "pw", password_matches=True) == []
    # a router that cannot tell (password_matches None): assumed to have the same password
    assert router_settings_diff({}, CONFIG, "other") == []


def test_peers_plan():
    assert peers_plan(["a:6783"], ["a:6783"]) == ("none", [])
    assert peers_plan(["b:6783", "a:6783"], ["a:6783", "b:6783"]) == ("none", [])
    assert peers_plan(["a:6783", "c:6783"], ["a:6783"]) == ("replace", ["a:6783", "c:6783"])
    assert peers_plan([], ["a:6783", "b:6783"]) == ("forget", ["a:6783", "b:6783"])
    assert peers_plan([], []) == ("none", [])


def test_cidrs_plan():
    assert cidrs_plan(["10.0.0.1/24"], ["10.0.0.1/24"], exclusive=True) == ([], [])
    assert cidrs_plan(["10.10.0.1/24"], ["10.0.0.1/24"], exclusive=True) == (["10.10.0.1/24"], ["10.0.0.1/24"])
    assert cidrs_plan(["10.10.0.1/24"], ["10.0.0.1/24"], exclusive=False) == (["10.10.0.1/24"], [])


def test_find_container_by_name_or_id():
    cs = [{"id": "abcdef0123456789", "name": "web1", "cidrs": []}, {"id": "99", "name": "/db", "cidrs": []}]
    assert find_container(cs, "web1")["id"] == "abcdef0123456789"
    assert find_container(cs, "abcdef012345")["name"] == "web1"
    assert find_container(cs, "db")["id"] == "99"
    assert find_container(cs, "abc") is None
    assert find_container(cs, "nope") is None


def test_launch_args_never_carry_the_password():
    argv = launch_args({"nickname": "h2", "conn_limit": 10, "mtu": 1400, "discovery": False, "fastdp": False,
                        "port": 6783}, ["192.0.2.11:6783"])
    assert argv == ["--nickname", "h2", "--port", "6783", "--conn-limit", "10", "--mtu", "1400",
                    "--no-discovery", "--no-fastdp", "192.0.2.11:6783"]
    assert launch_args({}, []) == []


def test_normalize_addresses():
    assert normalize_addresses(["net:10.0.0.0/24", "net:default", "10.0.0.1/24", "10.0.0.1/24",
                                "net:10.0.0.0/24"]) == ["net:10.0.0.0/24", "net:default", "10.0.0.1/24",
                                                        "net:10.0.0.0/24"]
    for bad in ("net:10.0.0.1/24", "net:x", "net:"):
        with pytest.raises(WeaveError):
            normalize_addresses([bad])


def test_address_plan_keeps_allocations():
    # an allocated address in the subnet satisfies net:SUBNET: nothing to do
    assert address_plan(["net:10.0.0.0/24"], ["10.0.0.7/24"], exclusive=True) == ([], [])
    # none yet: ask the router to allocate
    assert address_plan(["net:10.0.0.0/24"], [], exclusive=True) == (["net:10.0.0.0/24"], [])
    # net:default takes any address not claimed by another entry
    assert address_plan(["10.0.0.1/24", "net:default"], ["10.0.0.1/24", "10.32.0.5/12"], True) == ([], [])
    assert address_plan(["10.0.0.1/24", "net:default"], ["10.0.0.1/24"], True) == (["net:default"], [])
    # subnet specs claim first, so net:default does not steal their address
    assert address_plan(["net:default", "net:10.0.0.0/24"], ["10.0.0.7/24"], True) == (["net:default"], [])
    # exclusive removes what nobody claims; non-exclusive keeps it
    assert address_plan(["net:10.10.0.0/24"], ["10.0.0.7/24"], True) == (["net:10.10.0.0/24"], ["10.0.0.7/24"])
    assert address_plan(["net:10.10.0.0/24"], ["10.0.0.7/24"], False) == (["net:10.10.0.0/24"], [])
    # two allocations in one subnet need two addresses
    assert address_plan(["net:10.0.0.0/24", "net:10.0.0.0/24"], ["10.0.0.7/24"], True) == (["net:10.0.0.0/24"], [])


def test_ipam_and_dns_settings():
    cfg = dict(CONFIG, ipalloc_range="10.32.0.0/12", ipalloc_default_subnet="10.32.0.0/12", dns=True,
               dns_domain="weave.local.", dns_ttl=1)
    same = {"ipalloc_range": "10.32.0.0/12", "dns_domain": "weave.local", "dns": True, "dns_ttl": 1}
    assert router_settings_diff(same, cfg, "pw") == []
    assert router_settings_diff({"ipalloc_range": "10.0.0.0/8", "dns": False}, cfg, "pw") == ["ipalloc_range", "dns"]
    # a router that does not report a setting: not compared (no restart on every run)
    assert router_settings_diff({"ipalloc_range": "10.0.0.0/8"}, CONFIG, "pw") == []
    assert launch_args({"ipalloc_range": "10.0.0.0/8", "dns": False, "dns_domain": "mesh.", "dns_ttl": 5}, []) == [
        "--ipalloc-range", "10.0.0.0/8", "--no-dns", "--dns-domain", "mesh.", "--dns-ttl", "5"]
