#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: weave_container
short_description: Run a Docker container on the weavenet overlay, or attach and detach an existing one
version_added: "0.1.0"
description:
  - C(state=started) runs the container with C(weave run) (Docker's C(docker run) plus addresses on C(ethwe)) when
    it does not exist, starts it when it is stopped, and makes its overlay addresses exactly O(cidrs).
    A container whose image differs from O(image) (or any container when O(recreate=true)) is removed and run again.
  - C(state=absent) removes the container (C(docker rm -f)); the router forgets its addresses.
  - C(state=attached) adds O(cidrs) to an existing, running container (C(weave attach)); with O(exclusive=true)
    other overlay addresses of the container are removed.
  - C(state=detached) removes O(cidrs) from the container, or all its overlay addresses when O(cidrs) is not given.
  - Current addresses are read from C(weave report) (C(router.containers)), so the module is idempotent on addresses.
author:
  - weavenet developers (@weavenet)
options:
  name:
    description: Container name (or id, for C(attached) and C(detached)).
    type: str
    required: true
  state:
    description: What to do, see the description.
    type: str
    choices: [started, absent, attached, detached]
    default: started
  image:
    description: Image to run. Required with C(state=started).
    type: str
  command:
    description: Command and arguments (a list, or a string split like a shell would).
    type: raw
  cidrs:
    description:
      - Overlay addresses - an explicit address with prefix length (C(10.0.0.1/24)), C(net:SUBNET) (the router
        allocates one in that subnet, such as C(net:10.0.0.0/24)) or C(net:default) (its default subnet).
      - An allocation entry is satisfied by any address the container already has in that subnet, so re-runs
        keep the allocated address.
      - With C(state=started) the default is C([net:default]); required with C(attached). C(detached) takes
        explicit addresses only.
    type: list
    elements: str
  exclusive:
    description: With C(state=attached), remove the container's other overlay addresses.
    type: bool
    default: false
  recreate:
    description: With C(state=started), remove and run the container again even if it exists with the same image.
    type: bool
    default: false
  env:
    description: Environment variables of the container.
    type: dict
  volumes:
    description: Volumes, as C(docker run -v) takes them (C(/host:/container[:ro])).
    type: list
    elements: str
  hostname:
    description: Host name of the container.
    type: str
  labels:
    description: Docker labels of the container.
    type: dict
  restart_policy:
    description: Docker restart policy.
    type: str
    choices: ['no', on-failure, always, unless-stopped]
  pull:
    description:
      - When to pull the image (C(weave run --pull)); the router's default is C(missing).
      - C(never) keeps hosts without registry access from trying one.
    type: str
    choices: [missing, always, never]
  tty:
    description: Allocate a pseudo-TTY (C(-t)).
    type: bool
    default: false
  interactive:
    description: Keep standard input open (C(-i)).
    type: bool
    default: false
  docker_bin:
    description: The C(docker) command on the managed host (default - found on C(PATH)).
    type: path
  docker_host:
    description: Docker daemon to use (C(DOCKER_HOST)); default - the local one.
    type: str
extends_documentation_fragment:
  - weavenet.mesh.weave
notes:
  - The router must be running (M(weavenet.mesh.weave_router)), and the image must be present on the host.
  - Only the image is compared with a running container; use O(recreate) after changing other options.
seealso:
  - module: weavenet.mesh.weave_router
  - module: weavenet.mesh.weave_expose
"""

EXAMPLES = r"""
- name: A web server on the frontend subnet
  weavenet.mesh.weave_container:
    name: web1
    image: busybox
    command: [httpd, -f, -p, "80"]
    cidrs: [10.0.0.1/24]
    restart_policy: unless-stopped

- name: Also put it on the backend subnet
  weavenet.mesh.weave_container:
    name: web1
    state: attached
    cidrs: [10.10.0.1/24]

- name: Move it off the frontend subnet
  weavenet.mesh.weave_container:
    name: web1
    state: detached
    cidrs: [10.0.0.1/24]

- name: Remove it
  weavenet.mesh.weave_container:
    name: web1
    state: absent
"""

RETURN = r"""
container_id:
  description: The container's id (empty when it does not exist after the task, or in check mode before creation).
  returned: always
  type: str
cidrs:
  description: The container's overlay addresses after the task (predicted in check mode).
  returned: always
  type: list
  elements: str
  sample: ["10.0.0.1/24"]
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["run", "attach 10.10.0.1/24"]
"""

import json
import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six import string_types
from ansible_collections.weavenet.mesh.plugins.module_utils.weave_client import (
    COMMON_ARGS,
    WeaveClient,
    WeaveError,
    address_plan,
    find_container,
    normalize_addresses,
    normalize_cidrs,
)


def run_args(params, cidrs):
    """`weave run` arguments for the module's parameters."""
    argv = ["run"] + list(cidrs) + ["--name", params["name"]]
    for key in sorted(params.get("env") or {}):
        argv += ["-e", "%s=%s" % (key, params["env"][key])]
    for vol in params.get("volumes") or []:
        argv += ["-v", vol]
    if params.get("hostname"):
        argv += ["--hostname", params["hostname"]]
    for key in sorted(params.get("labels") or {}):
        argv += ["--label", "%s=%s" % (key, params["labels"][key])]
    if params.get("restart_policy"):
        argv += ["--restart", params["restart_policy"]]
    if params.get("pull"):
        argv += ["--pull", params["pull"]]
    if params.get("tty"):
        argv.append("-t")
    if params.get("interactive"):
        argv.append("-i")
    argv.append(params["image"])
    return argv + command_list(params.get("command"))


def command_list(command):
    if command is None:
        return []
    if isinstance(command, string_types):
        return shlex.split(command)
    if isinstance(command, (list, tuple)):
        return [str(c) for c in command]
    raise WeaveError("command must be a string or a list")


def same_image(wanted, have):
    def norm(image):
        image = image or ""
        last = image.rsplit("/", 1)[-1]
        if ":" not in last and "@" not in last:
            image += ":latest"
        return image
    return norm(wanted) == norm(have)


class ContainerManager(object):
    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.p = module.params
        self.actions = []
        self.changed = False
        self.docker_bin = self.p.get("docker_bin") or module.get_bin_path("docker")
        self.docker_env = {"DOCKER_HOST": self.p["docker_host"]} if self.p.get("docker_host") else None

    def do(self, action, func):
        self.actions.append(action)
        self.changed = True
        if not self.module.check_mode:
            return func()
        return None

    def docker(self, args, check=True):
        if not self.docker_bin:
            raise WeaveError("the docker command was not found on the managed host (set docker_bin)")
        rc, out, err = self.module.run_command([self.docker_bin] + args, environ_update=self.docker_env)
        if check and rc != 0:
            lines = (err or out or "").strip().splitlines()
            raise WeaveError("docker %s failed: %s" % (args[0], lines[-1] if lines else "exit status %d" % rc))
        return rc, out, err

    def inspect(self, name):
        rc, out, err = self.docker(["inspect", "--type", "container", name], check=False)
        if rc != 0:
            if "no such" in (err or "").lower():
                return None
            lines = (err or out or "").strip().splitlines()
            raise WeaveError("docker inspect failed: %s" % (lines[-1] if lines else "exit status %d" % rc))
        data = json.loads(out)
        return data[0] if data else None

    def attached(self, report, info):
        containers = report["router"].get("containers") or []
        entry = find_container(containers, info["Id"]) if info else None
        if entry is None:
            entry = find_container(containers, self.p["name"])
        return normalize_cidrs(entry.get("cidrs") or []) if entry else []

    def set_cidrs(self, target, to_add, to_remove):
        if to_remove:
            self.do("detach " + " ".join(to_remove), lambda: self.client.run(["detach"] + to_remove + [target]))
        if to_add:
            self.do("attach " + " ".join(to_add), lambda: self.client.run(["attach"] + to_add + [target]))

    def run(self, desired):
        out = self.do("run", lambda: self.client.run(run_args(self.p, desired))[1])
        return (out or "").strip().splitlines()[-1] if out else ""

    def started(self, report, info, desired):
        """Returns (container id, addresses after)."""
        if info is not None and (self.p["recreate"] or not same_image(self.p["image"], info["Config"].get("Image"))):
            self.do("remove", lambda: self.docker(["rm", "-f", info["Id"]]))
            info = None
        if info is None:
            return self.run(desired), desired
        cid = info["Id"]
        current = self.attached(report, info)
        if not info["State"].get("Running"):
            self.do("start", lambda: self.docker(["start", cid]))
            if not self.module.check_mode:
                current = self.attached(self.client.report() or report, info)
        to_add, to_remove = address_plan(desired, current, exclusive=True)
        self.set_cidrs(cid, to_add, to_remove)
        return cid, [c for c in current if c not in to_remove] + to_add


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="started", choices=["started", "absent", "attached", "detached"]),
        image=dict(type="str"),
        command=dict(type="raw"),
        cidrs=dict(type="list", elements="str"),
        exclusive=dict(type="bool", default=False),
        recreate=dict(type="bool", default=False),
        env=dict(type="dict"),
        volumes=dict(type="list", elements="str"),
        hostname=dict(type="str"),
        labels=dict(type="dict"),
        restart_policy=dict(type="str", choices=["no", "on-failure", "always", "unless-stopped"]),
        pull=dict(type="str", choices=["missing", "always", "never"]),
        tty=dict(type="bool", default=False),
        interactive=dict(type="bool", default=False),
        docker_bin=dict(type="path"),
        docker_host=dict(type="str"),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "started", ("image",)), ("state", "attached", ("cidrs",))],
    )
    p = module.params
    client = WeaveClient(module)
    manager = ContainerManager(module, client)
    cid, after = "", []
    before = []
    try:
        if p["state"] == "detached":
            desired = normalize_cidrs(p["cidrs"])
        else:
            desired = normalize_addresses(p["cidrs"] if p["cidrs"] is not None else ["net:default"])
        if p["state"] in ("started", "attached") and not desired:
            raise WeaveError("cidrs must name at least one address for state=%s" % p["state"])
        client.check_installed()
        info = manager.inspect(p["name"])
        report = client.report()
        if report is None and p["state"] != "absent":
            raise WeaveError("the weave router is not running on this host (start it with weave_router first)")
        before = manager.attached(report, info) if (report and info) else []
        if p["state"] == "started":
            cid, after = manager.started(report, info, desired)
        elif p["state"] == "absent":
            if info is not None:
                manager.do("remove", lambda: manager.docker(["rm", "-f", info["Id"]]))
        else:
            if info is None:
                raise WeaveError("container %s does not exist" % p["name"])
            if not info["State"].get("Running"):
                raise WeaveError("container %s is not running" % p["name"])
            cid = info["Id"]
            if p["state"] == "attached":
                to_add, to_remove = address_plan(desired, before, p["exclusive"])
            else:
                to_add, to_remove = [], [c for c in (desired or before) if c in before]
            manager.set_cidrs(cid, to_add, to_remove)
            after = [c for c in before if c not in to_remove] + to_add
    except WeaveError as e:
        module.fail_json(msg=str(e), actions=manager.actions)
    if manager.changed and not module.check_mode and p["state"] != "absent":
        try:  # the addresses the router actually gave (allocations)
            final = client.report()
            info_after = manager.inspect(p["name"])
            if final is not None and info_after is not None:
                cid = info_after["Id"]
                after = manager.attached(final, info_after)
        except WeaveError:
            pass
    result = dict(changed=manager.changed, container_id=cid or "", cidrs=after, actions=manager.actions)
    if module._diff:
        result["diff"] = dict(before=dict(exists=info is not None, cidrs=sorted(before)),
                              after=dict(exists=p["state"] != "absent", cidrs=sorted(after)))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
