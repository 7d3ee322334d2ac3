# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

from ansible_collections.weavenet.mesh.plugins.modules.weave_container import command_list, run_args, same_image
from ansible_collections.weavenet.mesh.plugins.modules.weave_expose import plan


def test_run_args():
    params = dict(name="web1", image="busybox", command="httpd -f -p 80", env={"B": "2", "A": "1"},
                  volumes=["/a:/b"], hostname="web", labels={"k": "v"}, restart_policy="always",
                  pull="never", tty=True, interactive=False)
    assert run_args(params, ["10.0.0.1/24"]) == [
        "run", "10.0.0.1/24", "--name", "web1", "-e", "A=1", "-e", "B=2", "-v", "/a:/b", "--hostname", "web",
        "--label", "k=v", "--restart", "always", "--pull", "never", "-t", "busybox", "httpd", "-f", "-p", "80"]


def test_command_list():
    assert command_list(None) == []
    assert command_list(["sh", "-c", "echo 'a b'"]) == ["sh", "-c", "echo 'a b'"]
    assert command_list("sh -c 'echo a b'") == ["sh", "-c", "echo a b"]


def test_same_image():
    assert same_image("busybox", "busybox:latest")
    assert same_image("reg:5000/app", "reg:5000/app:latest")
    assert not same_image("busybox", "busybox:1.36")


def test_expose_plan():
    assert plan(["10.0.0.254/24"], [], "present", False) == (["10.0.0.254/24"], [])
    assert plan(["10.0.0.254/24"], ["10.0.0.254/24"], "present", False) == ([], [])
    assert plan(["10.0.0.254/24"], ["10.10.0.254/24"], "present", True) == (["10.0.0.254/24"], ["10.10.0.254/24"])
    assert plan(["10.0.0.254/24"], ["10.0.0.254/24"], "absent", False) == ([], ["10.0.0.254/24"])
    assert plan(["10.0.0.254/24"], [], "absent", False) == ([], [])
