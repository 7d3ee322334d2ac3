# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.weavenet.mesh.plugins.module_utils.weave_client import (
    WeaveError,
    cidrs_plan,
    find_container,
    launch_args,
    normalize_cidr,
    normalize_peer,
    normalize_peers,
    password_fingerprint,
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


def test_fingerprint_matches_router_formula():
    want = hashlib.sha256(b"weavenet-fp:" + "s3cret".encode()).hexdigest()[:16]
    assert password_fingerprint("s3cret") == want
    assert len(want) == 16 and "s3cret" not in want


REPORT_OLD = {"nickname": "h1", "conn_limit": 100, "discovery": True, "port": 6783, "encryption": True,
              "dataplane": {"mtu": 1376, "fastdp": True}}
CONFIG = {"nickname": "h1", "port": 6783, "conn_limit": 100, "discovery": True, "mtu": 1376, "fastdp": True,
          "encrypted": True, "password_fingerprint": password_fingerprint("pw")}


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
    assert router_settings_diff({}, CONFIG, "other") == ["password"]
    # a router that reports no fingerprint: assumed to have the same password
    assert router_settings_diff({}, dict(CONFIG, password_fingerprint=None), "other") == []


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
