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
  - An existing container is compared with the declaration field by field, like
    C(community.docker.docker_container)'s comparisons - the image (by id, after resolving the tag), O(command),
    O(entrypoint), O(env), O(volumes), O(ports), O(labels), O(restart_policy), O(hostname), O(user),
    O(working_dir), O(network_mode), O(dns), O(dns_search), O(dns_opts), O(etc_hosts), O(tty), O(interactive).
    A field that is not declared is compared with its default - the image's own value (command, entrypoint,
    user, working directory), nothing (ports, volumes, extra hosts, restart policy C(no)), or what C(weave run)
    sets (weaveDNS resolver, search domain and host name).
  - Env and labels are the image's own plus the declared ones, so those the image brings are not differences and
    removing a declared one is. C(TERM=xterm), which Docker adds to a container with a TTY, is not either.
  - A difference in the restart policy is applied in place (C(docker update)); any other difference removes the
    container and runs it again (as does O(recreate=true)). The container keeps its overlay addresses across the
    recreation when O(cidrs) still allow them (an allocated address is asked for again explicitly). An image
    that is not on the host is pulled before the old container is removed (unless O(pull=never), which fails
    first).
  - Differences in O(cidrs) alone are applied without recreating, by C(weave attach) and C(weave detach).
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
    description: Command and arguments (a list, or a string split like a shell would). Default - the image's.
    type: raw
  entrypoint:
    description:
      - Entrypoint (a list, or a string split like a shell would). Default - the image's.
      - As with C(docker run --entrypoint), the image's command is then not used; declare O(command) too.
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
    description: With C(state=started), remove and run the container again even if it matches the declaration.
    type: bool
    default: false
  env:
    description:
      - Environment variables of the container (on top of the image's). Values are strings; numbers are
        converted, booleans refused (quote them).
    type: dict
  volumes:
    description: Volumes, as C(docker run -v) takes them (C(/host:/container[:ro]), C(name:/container), C(/container)).
    type: list
    elements: str
  ports:
    description:
      - Published ports, as C(docker run -p) takes them - C([IP:][HOST_PORT:]PORT[/tcp|udp|sctp]), one binding
        per container port.
    type: list
    elements: str
  hostname:
    description: Host name of the container. Default - C(NAME.DOMAIN) when the router runs weaveDNS, else Docker's.
    type: str
  user:
    description: User (C(docker run --user)). Default - the image's.
    type: str
  working_dir:
    description: Working directory (C(docker run --workdir)). Default - the image's.
    type: str
  labels:
    description: Docker labels of the container (on top of the image's).
    type: dict
  restart_policy:
    description: Docker restart policy (changed in place, without recreating the container). Default - C(no).
    type: str
    choices: ['no', on-failure, always, unless-stopped]
  restart_retries:
    description: With O(restart_policy=on-failure), how many times Docker restarts it (0 - no limit).
    type: int
  network_mode:
    description:
      - Docker network of the container (C(docker run --network)), besides its overlay interface. Default -
        Docker's default bridge.
    type: str
  dns:
    description: DNS servers. Default (also when empty) - the router's weaveDNS resolver when it runs one.
    type: list
    elements: str
  dns_search:
    description: DNS search domains. Default (also when empty) - the weaveDNS domain when the router runs weaveDNS.
    type: list
    elements: str
  dns_opts:
    description: DNS resolver options (C(docker run --dns-option)).
    type: list
    elements: str
  etc_hosts:
    description: Extra C(/etc/hosts) entries, host name to IP address (C(docker run --add-host)).
    type: dict
  pull:
    description:
      - When to pull the image (C(weave run --pull)); the router's default is C(missing).
      - C(never) keeps hosts without registry access from trying one.
      - C(always) pulls before comparing, so a new image behind the same tag recreates the container.
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
  forget_timeout:
    description:
      - Seconds to wait, after removing a container to recreate it, until the router has let go of its
        addresses (so the new one can take them).
    type: int
    default: 20
  docker_bin:
    description: The C(docker) command on the managed host (default - found on C(PATH)).
    type: path
  docker_host:
    description: Docker daemon to use (C(DOCKER_HOST)); default - the local one.
    type: str
extends_documentation_fragment:
  - weavenet.mesh.weave
notes:
  - The router must be running (M(weavenet.mesh.weave_router)).
  - Options not in this list (memory limits, capabilities, ...) are not managed; unknown options are refused.
seealso:
  - module: weavenet.mesh.weave_router
  - module: weavenet.mesh.weave_expose
  - module: community.docker.docker_container
"""

EXAMPLES = r"""
- name: A web server on the frontend subnet, published on the host's port 8080
  weavenet.mesh.weave_container:
    name: web1
    image: busybox
    command: [httpd, -f, -p, "80"]
    cidrs: [10.0.0.1/24]
    ports: ["8080:80"]
    env:
      MODE: production
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
  sample: ["pull", "remove", "run 10.0.0.1/24"]
differences:
  description: The declared fields that differed from the existing container (see the description).
  returned: always
  type: list
  elements: str
  sample: ["env", "ports"]
"""

import json
import os
import shlex
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.weavenet.mesh.plugins.module_utils.weave_client import (
    COMMON_ARGS,
    WeaveClient,
    WeaveError,
    address_plan,
    find_container,
    normalize_addresses,
    normalize_cidrs,
)
from ansible_collections.weavenet.mesh.plugins.module_utils.weave_container_compare import (
    RESTART_POLICIES,
    Context,
    SpecError,
    check_params,
    command_list,
    etc_hosts_list,
    plan,
    restart_value,
    string_map,
)

# The options a declared container has (the containers role's weave_containers items take these; a unit
# test holds roles/containers/meta/argument_specs.yml to them).
CONTAINER_SPEC = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="started", choices=["started", "absent", "attached", "detached"]),
    image=dict(type="str"),
    command=dict(type="raw"),
    entrypoint=dict(type="raw"),
    cidrs=dict(type="list", elements="str"),
    recreate=dict(type="bool", default=False),
    env=dict(type="dict"),
    volumes=dict(type="list", elements="str"),
    ports=dict(type="list", elements="str"),
    hostname=dict(type="str"),
    user=dict(type="str"),
    working_dir=dict(type="str"),
    labels=dict(type="dict"),
    restart_policy=dict(type="str", choices=list(RESTART_POLICIES)),
    restart_retries=dict(type="int"),
    network_mode=dict(type="str"),
    dns=dict(type="list", elements="str"),
    dns_search=dict(type="list", elements="str"),
    dns_opts=dict(type="list", elements="str"),
    etc_hosts=dict(type="dict"),
    pull=dict(type="str", choices=["missing", "always", "never"]),
    tty=dict(type="bool", default=False),
    interactive=dict(type="bool", default=False),
)
# How the module is called, not what the container is.
CALL_SPEC = dict(
    exclusive=dict(type="bool", default=False),
    forget_timeout=dict(type="int", default=20),
    docker_bin=dict(type="path"),
    docker_host=dict(type="str"),
)
HIDDEN = "<hidden>"


def run_args(params, cidrs):
    """`weave run` arguments for the module's parameters (checked by check_params first)."""
    argv = ["run"] + list(cidrs) + ["--name", params["name"]]
    env = string_map(params.get("env"), "env") or {}
    for key in sorted(env):
        argv += ["-e", "%s=%s" % (key, env[key])]
    for vol in params.get("volumes") or []:
        argv += ["-v", vol]
    for port in params.get("ports") or []:
        argv += ["-p", port]
    labels = string_map(params.get("labels"), "labels") or {}
    for key in sorted(labels):
        argv += ["--label", "%s=%s" % (key, labels[key])]
    for opt, key in (("--hostname", "hostname"), ("--user", "user"), ("--workdir", "working_dir"),
                     ("--network", "network_mode")):
        if params.get(key):
            argv += [opt, params[key]]
    if params.get("restart_policy") or params.get("restart_retries"):
        argv += ["--restart", restart_value(params.get("restart_policy"), params.get("restart_retries"))]
    for opt, key in (("--dns", "dns"), ("--dns-search", "dns_search"), ("--dns-option", "dns_opts")):
        for value in params.get(key) or []:
            argv += [opt, value]
    for entry in etc_hosts_list(params.get("etc_hosts")):
        argv += ["--add-host", entry]
    entrypoint = command_list(params.get("entrypoint"), "entrypoint")
    if entrypoint is not None:
        argv += ["--entrypoint", " ".join(shlex.quote(a) for a in entrypoint)]
    if params.get("pull"):
        argv += ["--pull", params["pull"]]
    if params.get("tty"):
        argv.append("-t")
    if params.get("interactive"):
        argv.append("-i")
    argv.append(params["image"])
    return argv + (command_list(params.get("command")) or [])


def weave_dns(report):
    """(resolver address, domain) when the router runs weaveDNS: what `weave run` gives containers."""
    router = (report or {}).get("router") or {}
    dns = router.get("dns")
    if not (router.get("config") or {}).get("dns") or not isinstance(dns, dict) or not dns.get("address"):
        return None
    return str(dns["address"]), str(dns.get("domain") or "weave.local.").rstrip(".")


def hide_env(before, after):
    """Env values never reach the output (they may be secrets): keys shown, values only as changed or not."""
    b, a = before or {}, after or {}
    hb = dict((k, HIDDEN if a.get(k) == v else "<hidden, before>") for k, v in b.items())
    ha = dict((k, HIDDEN if b.get(k) == v else "<hidden, after>") for k, v in a.items())
    return hb, ha


class ContainerManager(object):
    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.p = module.params
        self.actions = []
        self.changed = False
        self.differences = []
        self.diff_before = {}
        self.diff_after = {}
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

    def _inspect(self, kind, name):
        rc, out, err = self.docker(["inspect", "--type", kind, name], check=False)
        if rc != 0:
            if "no such" in (err or "").lower():
                return None
            lines = (err or out or "").strip().splitlines()
            raise WeaveError("docker inspect failed: %s" % (lines[-1] if lines else "exit status %d" % rc))
        try:
            data = json.loads(out)
        except ValueError:
            raise WeaveError("docker inspect printed something that is not JSON")
        if not isinstance(data, list) or (data and not isinstance(data[0], dict)):
            raise WeaveError("docker inspect printed something unexpected")
        return data[0] if data else None

    def inspect(self, name):
        return self._inspect("container", name)

    def image(self):
        """The declared image on the host (pulled first with pull=always, outside check mode), or None."""
        if self.p.get("pull") == "always" and not self.module.check_mode:
            self.docker(["pull", "--quiet", self.p["image"]])
        return self._inspect("image", self.p["image"])

    def ensure_image(self, image):
        """Pull a missing image before anything is removed, so a bad name or an unreachable registry
        fails with the old container still running."""
        if image is not None:
            return
        if self.p.get("pull") == "never":
            raise WeaveError("image %s is not on the host and pull is never" % self.p["image"])
        self.do("pull", lambda: self.docker(["pull", "--quiet", self.p["image"]]))

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

    def run(self, cidrs):
        out = self.do("run", lambda: self.client.run(run_args(self.p, cidrs))[1])
        return (out or "").strip().splitlines()[-1] if out else ""

    def remove(self, info):
        """docker rm -f, then wait until the router has let go of its addresses (its Docker event
        watcher does that), so a new container can take them."""
        def rm():
            self.docker(["rm", "-f", info["Id"]])
            deadline = time.monotonic() + self.p["forget_timeout"]
            while True:
                report = self.client.report()
                if report is None or find_container(report["router"].get("containers"), info["Id"]) is None:
                    return
                if time.monotonic() > deadline:
                    raise WeaveError("the router still lists the removed container %s after %d s"
                                     % (info["Id"][:12], self.p["forget_timeout"]))
                time.sleep(0.2)
        self.do("remove", rm)

    def started(self, report, info, desired):
        """Returns (container id, addresses after)."""
        image = self.image()
        if info is None:
            self.ensure_image(image)
            return self.run(desired), desired
        pl = plan(info, Context(self.p, image, weave_dns(report)), self.p["recreate"])
        self.differences = [d.field for d in pl.diffs]
        self.diff_before, self.diff_after = pl.diff()
        if "env" in self.diff_before:
            self.diff_before["env"], self.diff_after["env"] = hide_env(self.diff_before["env"],
                                                                       self.diff_after["env"])
        current = self.attached(report, info)
        to_add, to_remove = address_plan(desired, current, exclusive=True)
        keep = [c for c in current if c not in to_remove]
        if pl.recreate:
            self.ensure_image(image)
            self.remove(info)
            # the addresses it keeps are asked for explicitly: an allocated one is not given to another
            return self.run(keep + to_add), keep + to_add
        cid = info["Id"]
        if pl.update_args:
            self.do("update " + " ".join(pl.update_args), lambda: self.docker(["update"] + pl.update_args + [cid]))
        if not info["State"].get("Running"):
            self.do("start", lambda: self.docker(["start", cid]))
            if not self.module.check_mode:
                current = self.attached(self.client.report() or report, info)
                to_add, to_remove = address_plan(desired, current, exclusive=True)
                keep = [c for c in current if c not in to_remove]
        self.set_cidrs(cid, to_add, to_remove)
        return cid, keep + to_add


def router_ready(client):
    """weave installed and its router answering."""
    if not (os.path.isfile(client.weave_bin) and os.access(client.weave_bin, os.X_OK)):
        return False
    try:
        return client.report() is not None
    except WeaveError:
        return False


def main():
    argument_spec = dict(CONTAINER_SPEC)
    argument_spec.update(CALL_SPEC)
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
    info = None
    try:
        check_params(p)
        if p["state"] == "detached":
            desired = normalize_cidrs(p["cidrs"])
        else:
            desired = normalize_addresses(p["cidrs"] if p["cidrs"] is not None else ["net:default"])
        if p["state"] in ("started", "attached") and not desired:
            raise WeaveError("cidrs must name at least one address for state=%s" % p["state"])
        if module.check_mode and p["state"] == "started" and not router_ready(client):
            # --check on a fresh fleet: the router is installed and launched by the same (checked) run
            module.warn("the weave router is not running (yet): predicted from the declaration only")
            module.exit_json(changed=True, container_id="", cidrs=desired, actions=["run"], differences=[],
                             diff=dict(before=dict(exists=False, cidrs=[]),
                                       after=dict(exists=True, cidrs=sorted(desired), image=p["image"])))
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
    except (WeaveError, SpecError) as e:
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
    result = dict(changed=manager.changed, container_id=cid or "", cidrs=after, actions=manager.actions,
                  differences=manager.differences)
    if module._diff:
        d_before = dict(manager.diff_before, exists=info is not None, cidrs=sorted(before))
        d_after = dict(manager.diff_after, exists=p["state"] != "absent", cidrs=sorted(after))
        if info is None and p["state"] == "started":
            d_after["image"] = p["image"]
        result["diff"] = dict(before=d_before, after=d_after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
