# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.weavenet.mesh.plugins.filter.mesh import (
    weave_address,
    weave_cidr_in,
    weave_peer_addresses,
    weave_peers,
    weave_resolve,
)

HOSTS = ["h1", "h2", "h3", "h4"]
ADDRS = {"h1": "192.0.2.11", "h2": "192.0.2.12", "h3": "192.0.2.13:7000"}


def test_chain_gives_every_host_launched_before():
    assert weave_peers(HOSTS, "h1", ADDRS) == []
    assert weave_peers(HOSTS, "h2", ADDRS) == ["192.0.2.11"]
    assert weave_peers(HOSTS, "h4", ADDRS) == ["192.0.2.11", "192.0.2.12", "192.0.2.13:7000"]


def test_previous_and_all():
    assert weave_peers(HOSTS, "h1", ADDRS, "previous") == []
    assert weave_peers(HOSTS, "h3", ADDRS, "previous") == ["192.0.2.12"]
    assert weave_peers(HOSTS, "h2", ADDRS, "all") == ["192.0.2.11", "192.0.2.13:7000", "h4"]


def test_two_meshes_never_mix():
    mesh_a, mesh_b = ["a1", "a2", "a3"], ["b1", "b2"]
    addrs = {"a1": "10.1.0.1", "a2": "10.1.0.2", "a3": "10.1.0.3", "b1": "10.2.0.1", "b2": "10.2.0.2"}
    for mesh in (mesh_a, mesh_b):
        for host in mesh:
            for mode in ("chain", "previous", "all"):
                peers = weave_peers(mesh, host, addrs, mode)
                assert set(peers) <= {addrs[h] for h in mesh if h != host}


def test_host_outside_group_is_an_error():
    with pytest.raises(AnsibleFilterError, match="not in the mesh group"):
        weave_peers(["a1"], "b1")
    with pytest.raises(AnsibleFilterError, match="mode"):
        weave_peers(["a1"], "a1", mode="ring")


def test_weave_address():
    assert weave_address("10.0.0.0/24", 1) == "10.0.0.1/24"
    assert weave_address("10.0.0.0/24", "254") == "10.0.0.254/24"
    for bad in (0, 255, 300, "x"):
        with pytest.raises(AnsibleFilterError):
            weave_address("10.0.0.0/24", bad)
    with pytest.raises(AnsibleFilterError, match="invalid subnet"):
        weave_address("10.0.0.1/24", 1)


def test_cidr_in():
    assert weave_cidr_in("10.0.0.5/24", "10.0.0.0/24")
    assert not weave_cidr_in("10.0.0.5/16", "10.0.0.0/24")
    assert not weave_cidr_in("10.10.0.5/24", "10.0.0.0/24")
    assert not weave_cidr_in("junk", "10.0.0.0/24")


SUBNETS = {"frontend": "10.0.0.0/24", "backend": "10.10.0.0/24"}


def test_resolve():
    assert weave_resolve(["frontend:1", "10.10.0.2/24", "frontend:1"], SUBNETS) == ["10.0.0.1/24", "10.10.0.2/24"]
    assert weave_resolve("backend:3", SUBNETS) == ["10.10.0.3/24"]
    assert weave_resolve(None, SUBNETS) == []


def test_resolve_errors():
    with pytest.raises(AnsibleFilterError, match="unknown subnet"):
        weave_resolve(["middle:1"], SUBNETS)
    with pytest.raises(AnsibleFilterError, match="none of this mesh's subnets"):
        weave_resolve(["10.20.0.1/24"], SUBNETS)
    assert weave_resolve(["10.20.0.1/24"], SUBNETS, require_declared=False) == ["10.20.0.1/24"]
    with pytest.raises(AnsibleFilterError, match="neither"):
        weave_resolve(["frontend"], SUBNETS)


def test_addresses_from_inventory_variables():
    hostvars = {"h1": {"weave_peer_address": "192.0.2.11", "ansible_host": "h1.example"},
                "h2": {"ansible_host": "198.51.100.2"}, "h3": {}}
    assert weave_peer_addresses(["h1", "h2", "h3"], hostvars=hostvars) == ["192.0.2.11", "198.51.100.2", "h3"]
    assert weave_peer_addresses(["h1"], {"h1": "10.0.0.1"}, hostvars) == ["10.0.0.1"]
    assert weave_peers(["h1", "h2", "h3"], "h3", hostvars=hostvars) == ["192.0.2.11", "198.51.100.2"]


def test_resolve_allocation_specs():
    assert weave_resolve(["net:frontend", "net:default", "net:10.10.0.0/24"], SUBNETS) == [
        "net:10.0.0.0/24", "net:default", "net:10.10.0.0/24"]
    with pytest.raises(AnsibleFilterError, match="not one of this mesh's subnets"):
        weave_resolve(["net:10.20.0.0/24"], SUBNETS)
    with pytest.raises(AnsibleFilterError, match="neither"):
        weave_resolve(["net:nowhere"], SUBNETS)
