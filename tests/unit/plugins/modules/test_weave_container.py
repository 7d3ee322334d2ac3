# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from ansible_collections.weavenet.mesh.plugins.module_utils.weave_container_compare import command_list
from ansible_collections.weavenet.mesh.plugins.modules.weave_container import (
    CALL_SPEC,
    CONTAINER_SPEC,
    HIDDEN,
    ContainerManager,
    hide_env,
    router_ready,
    run_args,
    weave_dns,
)
from ansible_collections.weavenet.mesh.plugins.modules.weave_expose import plan
from ansible_collections.weavenet.mesh.plugins.module_utils.weave_client import WeaveClient, WeaveError

COLLECTION = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
IMAGE_ID = "sha256:" + "a" * 64
CID = "c" * 64


def test_run_args():
    params = dict(name="web1", image="busybox", command="httpd -f -p 80", env={"B": "2", "A": 1},
                  volumes=["/a:/b"], ports=["8080:80", "53/udp"], hostname="web", user="nobody", working_dir="/srv",
                  labels={"k": "v"}, restart_policy="on-failure", restart_retries=3, network_mode="bridge",
                  dns=["9.9.9.9"], dns_search=["example.org"], dns_opts=["ndots:2"], etc_hosts={"db": "10.0.0.9"},
                  entrypoint=["/bin/sh", "-c"], pull="never", tty=True, interactive=False)
    assert run_args(params, ["10.0.0.1/24"]) == [
        "run", "10.0.0.1/24", "--name", "web1", "-e", "A=1", "-e", "B=2", "-v", "/a:/b", "-p", "8080:80",
        "-p", "53/udp", "--label", "k=v", "--hostname", "web", "--user", "nobody", "--workdir", "/srv",
        "--network", "bridge", "--restart", "on-failure:3", "--dns", "9.9.9.9", "--dns-search", "example.org",
        "--dns-option", "ndots:2", "--add-host", "db:10.0.0.9", "--entrypoint", "/bin/sh -c", "--pull", "never",
        "-t", "busybox", "httpd", "-f", "-p", "80"]
    minimal = dict(name="w", image="busybox")
    assert run_args(minimal, ["net:default"]) == ["run", "net:default", "--name", "w", "busybox"]


def test_command_list():
    assert command_list(None) is None
    assert command_list(["sh", "-c", "echo 'a b'"]) == ["sh", "-c", "echo 'a b'"]
    assert command_list("sh -c 'echo a b'") == ["sh", "-c", "echo a b"]


def test_env_values_never_reach_the_diff():
    before, after = hide_env({"A": "s3cret", "B": "same"}, {"A": "n3w", "B": "same", "C": "x"})
    assert before == {"A": "<hidden, before>", "B": HIDDEN}
    assert after == {"A": "<hidden, after>", "B": HIDDEN, "C": "<hidden, after>"}
    assert "s3cret" not in json.dumps([before, after]) and "n3w" not in json.dumps([before, after])


def test_weave_dns_from_the_report():
    report = {"router": {"config": {"dns": True}, "dns": {"address": "172.17.0.1", "domain": "weave.local."}}}
    assert weave_dns(report) == ("172.17.0.1", "weave.local")
    assert weave_dns({"router": {"config": {"dns": False}}}) is None
    assert weave_dns({"router": {"config": {"dns": True}, "dns": "garbage"}}) is None


def test_expose_plan():
    assert plan(["10.0.0.254/24"], [], "present", False) == (["10.0.0.254/24"], [])
    assert plan(["10.0.0.254/24"], ["10.0.0.254/24"], "present", False) == ([], [])
    assert plan(["10.0.0.254/24"], ["10.10.0.254/24"], "present", True) == (["10.0.0.254/24"], ["10.10.0.254/24"])
    assert plan(["10.0.0.254/24"], ["10.0.0.254/24"], "absent", False) == ([], ["10.0.0.254/24"])
    assert plan(["10.0.0.254/24"], [], "absent", False) == ([], [])


# --- one definition: the containers role's item options are the module's --------------------------------
def role_item_options():
    with open(os.path.join(COLLECTION, "roles", "containers", "meta", "argument_specs.yml")) as f:
        spec = yaml.safe_load(f)
    return spec["argument_specs"]["main"]["options"]["weave_containers"]["options"]


def test_role_item_options_are_the_modules_container_options():
    role = role_item_options()
    assert sorted(role) == sorted(CONTAINER_SPEC)
    for key, mod in CONTAINER_SPEC.items():
        r = role[key]
        assert r["type"] == mod["type"], key
        assert r.get("elements") == mod.get("elements"), key
        assert bool(r.get("required")) == bool(mod.get("required")), key
        assert r.get("default") == mod.get("default"), key
        if key == "state":   # the role declares containers: started or absent, not attach/detach
            assert set(r["choices"]) == {"started", "absent"} < set(mod["choices"])
        else:
            assert r.get("choices") == mod.get("choices"), key
        assert r.get("description"), key


def test_role_passes_every_item_option_to_the_module():
    with open(os.path.join(COLLECTION, "roles", "containers", "tasks", "main.yml")) as f:
        tasks = yaml.safe_load(f)
    block = [t for t in tasks if "block" in t][0]["block"]
    task = [t for t in block if "weavenet.mesh.weave_container" in t][0]
    args = task["weavenet.mesh.weave_container"]
    assert set(CONTAINER_SPEC) <= set(args)
    assert set(args) <= set(CONTAINER_SPEC) | set(CALL_SPEC) | {"weave_bin", "rundir", "datadir"}
    for key in CONTAINER_SPEC:
        if key != "cidrs":   # resolved from SUBNET:N first
            assert re.search(r"\bitem\.%s\b" % key, args[key]), (key, args[key])


# --- the manager against a fake host (docker and weave answered from tables) -----------------------------
class FakeHost(object):
    """run_command for `docker` and `weave`: a container, an image, a router report; records mutations."""

    def __init__(self, params, container, image, cidrs, check_mode=False):
        self.params = params
        self.check_mode = check_mode
        self.container = container
        self.image = image
        self.cidrs = cidrs
        self.calls = []

    def get_bin_path(self, name, opt_dirs=None):
        return "/usr/bin/" + name

    def run_command(self, argv, environ_update=None):
        tool, args = os.path.basename(argv[0]), argv[1:]
        if tool == "docker" and args[:2] == ["inspect", "--type"]:
            obj = self.container if args[2] == "container" else self.image
            return (0, json.dumps([obj]), "") if obj else (1, "", "Error: No such object: " + args[3])
        if tool == "weave" and args == ["report"]:
            containers = [{"id": self.container["Id"], "name": "/web1", "cidrs": self.cidrs}] if self.container else []
            return 0, json.dumps({"router": {"containers": containers, "config": {"dns": True},
                                             "dns": {"address": "172.17.0.1", "domain": "weave.local."}}}), ""
        self.calls.append([tool] + args)
        if tool == "docker" and args[0] == "rm":
            self.container = None
        if tool == "weave" and args[0] == "run":
            return 0, "d" * 64 + "\n", ""
        return 0, "", ""


def params(**kw):
    p = dict((k, v.get("default")) for k, v in CONTAINER_SPEC.items())
    p.update(dict((k, v.get("default")) for k, v in CALL_SPEC.items()))
    p.update(name="web1", image="busybox", cidrs=None, weave_bin="/usr/bin/weave", rundir=None, datadir=None,
             docker_bin="/usr/bin/docker")
    p.update(kw)
    return p


def running(env=None, restart="", cmd=None):
    return {"Id": CID, "Image": IMAGE_ID, "State": {"Running": True},
            "Config": {"Hostname": "web1.weave.local", "Env": ["PATH=/bin"] + (env or []), "Cmd": cmd or ["/bin/sh"],
                       "Labels": {}},
            "HostConfig": {"RestartPolicy": {"Name": restart}, "NetworkMode": "default", "Dns": ["172.17.0.1"],
                           "DnsSearch": ["weave.local"], "PortBindings": {}}}


IMAGE = {"Id": IMAGE_ID, "Config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}}


def converge(host, desired):
    m = ContainerManager(host, WeaveClient(host))
    info = m.inspect("web1")
    return m, m.started(m.client.report(), info, desired)


def test_matching_container_changes_nothing():
    host = FakeHost(params(), running(), IMAGE, ["10.32.0.5/12"])
    m, (cid, after) = converge(host, ["net:default"])
    assert not m.changed and host.calls == [] and after == ["10.32.0.5/12"] and cid == CID


def test_recreate_keeps_the_allocated_address_and_runs_after_the_router_let_go():
    host = FakeHost(params(env={"MODE": "b"}, ports=["8080:80"]), running(env=["MODE=a"]), IMAGE, ["10.32.0.5/12"])
    m, (cid, after) = converge(host, ["net:default"])
    assert m.changed and m.actions == ["remove", "run"] and m.differences == ["env", "ports"]
    assert host.calls[0] == ["docker", "rm", "-f", CID]
    run = host.calls[1]
    assert run[:4] == ["weave", "run", "10.32.0.5/12", "--name"]     # asked for again explicitly
    assert ["-p", "8080:80"] == run[run.index("-p"):run.index("-p") + 2]
    assert after == ["10.32.0.5/12"] and cid == "d" * 64
    assert m.diff_before["env"] == {"PATH": HIDDEN, "MODE": "<hidden, before>"}


def test_changed_cidrs_with_a_recreate_run_with_the_new_ones():
    host = FakeHost(params(command=["httpd"]), running(), IMAGE, ["10.0.0.1/24"])
    m, (cid, after) = converge(host, ["10.0.0.2/24"])
    assert host.calls[1][:3] == ["weave", "run", "10.0.0.2/24"] and after == ["10.0.0.2/24"]


def test_restart_policy_is_updated_in_place():
    host = FakeHost(params(restart_policy="unless-stopped"), running(), IMAGE, ["10.32.0.5/12"])
    m, (cid, after) = converge(host, ["net:default"])
    assert host.calls == [["docker", "update", "--restart", "unless-stopped", CID]]
    assert m.actions == ["update --restart unless-stopped"] and cid == CID


def test_cidrs_alone_reattach_without_recreating():
    host = FakeHost(params(), running(), IMAGE, ["10.0.0.1/24"])
    m, dummy = converge(host, ["10.0.0.1/24", "10.10.0.1/24"])
    assert host.calls == [["weave", "attach", "10.10.0.1/24", CID]]


def test_check_mode_predicts_and_does_nothing():
    host = FakeHost(params(env={"MODE": "b"}), running(), IMAGE, ["10.32.0.5/12"], check_mode=True)
    m, (cid, after) = converge(host, ["net:default"])
    assert m.changed and m.actions == ["remove", "run"] and host.calls == [] and after == ["10.32.0.5/12"]


def test_missing_image_is_pulled_before_the_old_container_is_removed():
    host = FakeHost(params(image="busybox:new"), running(), None, ["10.32.0.5/12"])
    m, dummy = converge(host, ["net:default"])
    assert [c[:2] for c in host.calls] == [["docker", "pull"], ["docker", "rm"], ["weave", "run"]]


def test_missing_image_with_pull_never_fails_before_anything_is_done():
    host = FakeHost(params(image="busybox:new", pull="never"), running(), None, ["10.32.0.5/12"])
    with pytest.raises(Exception, match="not on the host and pull is never"):
        converge(host, ["net:default"])
    assert host.calls == []


class StubClient(object):
    def __init__(self, weave_bin, report):
        self.weave_bin, self._report = weave_bin, report

    def report(self):
        if self._report == "error":
            raise WeaveError("weave report failed")
        return self._report


def test_router_ready_decides_whether_check_mode_predicts_from_the_declaration(tmp_path):
    weave = tmp_path / "weave"
    weave.write_text("#!/bin/sh\n")
    weave.chmod(0o755)
    assert not router_ready(StubClient(str(tmp_path / "missing"), {"router": {}}))   # fresh host
    assert not router_ready(StubClient(str(weave), None))         # installed, not launched yet
    assert not router_ready(StubClient(str(weave), "error"))
    assert router_ready(StubClient(str(weave), {"router": {}}))
