# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.weavenet.mesh.plugins.module_utils.weave_client import (
    WeaveClient,
    WeaveError,
    address_plan,
    cidrs_plan,
    config_json,
    find_container,
    normalize_addresses,
    normalize_cidr,
    peers_plan,
    private_file_differs,
    write_private_file,
)


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


PLAN = {"running": True, "differ": ["mtu"], "restart": True, "config": {"mtu": 1400}, "peers": None}


def test_dry_run_runs_launch_with_the_config_file_and_no_password_in_the_environment():
    m = RunModule(0, json.dumps(PLAN))
    assert WeaveClient(m).dry_run("/tmp/x/weave-config.json") == PLAN
    (argv, env), = m.calls
    assert argv == ["/x/weave", "launch", "--config", "/tmp/x/weave-config.json", "--dry-run"]
    assert env == {"WEAVE_RUNDIR": "/run/w1", "WEAVE_PASSWORD": ""}


@pytest.mark.parametrize("rc, out, err, says", [
    (1, "", "weave: invalid --mtu 70000: must be 576-9000", "invalid --mtu 70000: must be 576-9000"),
    (0, "yes", "", "unexpected"),
    (0, json.dumps(dict(PLAN, differ="mtu")), "", "unexpected"),
    (0, json.dumps(dict(PLAN, restart=None)), "", "unexpected"),
])
def test_dry_run_failures_are_one_line(rc, out, err, says):
    with pytest.raises(WeaveError, match=says):
        WeaveClient(RunModule(rc, out, err)).dry_run("/f")


def test_config_file_is_private_and_rewritten_only_when_it_changes(tmp_path):
    path = str(tmp_path / "config.json")
    text = config_json({"password": "s3cret", "mtu": 1400, "peers": ["192.0.2.1"]})
    assert json.loads(text) == {"password": "s3cret", "mtu": 1400, "peers": ["192.0.2.1"]}
    assert private_file_differs(path, text)
    assert write_private_file(path, text) is True
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert not private_file_differs(path, text) and write_private_file(path, text) is False
    os.chmod(path, 0o644)  # a readable file is rewritten private, even with the same text
    assert private_file_differs(path, text) and write_private_file(path, text) is True
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert os.listdir(str(tmp_path)) == ["config.json"]


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
