#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: weave_router
short_description: Launch, reconfigure, stop or reset the weavenet router on a host
version_added: "0.1.0"
description:
  - Manages the weavenet router of the managed host through its C(weave) command and C(weave report).
  - The settings are not checked or compared here. The module writes them to a 0600 JSON file and runs
    C(weave launch --config FILE --dry-run), which validates them with the router's own schema (a bad value
    fails with the router's one-line reason) and says which differ from the running router and whether that
    needs a restart. The setting options, their ranges and docs are generated from that schema.
  - Idempotent. A running router whose settings match is left alone; when only the peer list differs the
    targets are changed with C(weave connect --replace) or C(weave forget), without a restart; when another
    setting, the encryption or the password differs the router is stopped and launched again.
  - Settings left unset are not compared, and the router's defaults apply when it is launched.
  - The password goes in the 0600 file (never on a command line) and never appears in the module's output,
    diff or logs. A changed password is detected by the dry run asking the running router whether it is the
    same (its authenticated, constant-time C(POST /password/check); the report carries no hash of it); a
    router too old to answer is assumed to have it.
  - The C(weave) command authenticates to the router's local API with the token the router writes at start
    (C($WEAVE_RUNDIR/api-token), mode 0600), so the module needs root (or the router's user).
author:
  - weavenet developers (@weavenet)
options:
  state:
    description:
      - C(started) makes sure the router runs with these settings.
      - C(stopped) stops it (C(weave stop)), keeping its persisted peer name and targets.
      - C(absent) stops it and deletes its persisted state and bridge (C(weave reset)).
    type: str
    choices: [started, stopped, absent]
    default: started
  peers:
    description:
      - The router's explicit connection targets, as C(host) or C(host:port) (port 6783 when omitted).
      - The list is exact - targets not listed are forgotten. An empty list forgets them all.
      - When not given, the targets are left as they are (a router launched without peers reconnects to the
        targets it had before).
    type: list
    elements: str
  upgrade:
    description:
      - The installed router package changed (a new version) - if the router runs, replace it with
        C(weave launch --replace) - the new router loads its code first, then stops the old one as
        C(weave stop --restart) does (the kernel fast path keeps forwarding the containers' traffic until the
        new router adopts it) and takes over. The settings are checked (dry run) first, so the router is down
        only between the old one's exit and the new one's setup.
      - With O(systemd_unit), C(weave stop --restart), then the unit is started (the new router's start is
        then part of the gap).
      - Ignored when a changed setting needs a restart anyway (then the router is stopped and launched again).
    type: bool
    default: false
  systemd_unit:
    description:
      - Start, stop and restart the router through this systemd unit instead of C(weave launch) and C(weave stop).
      - The unit must run C(weave launch --config) on O(config_file) (the C(weavenet.mesh.router) role writes it so).
    type: str
  config_file:
    description:
      - Keep the settings (and peers and password) in this JSON file, mode 0600, as C(weave launch --config) reads
        them; rewritten when they change. Needed with O(systemd_unit), whose unit launches the router from it.
    type: path
extends_documentation_fragment:
  - weavenet.mesh.weave
  - weavenet.mesh.weave_router_settings
notes:
  - Needs root on the managed host (the router creates a bridge and devices).
seealso:
  - module: weavenet.mesh.weave_container
  - module: weavenet.mesh.weave_expose
"""

EXAMPLES = r"""
- name: First router of the mesh, encrypted
  weavenet.mesh.weave_router:
    password: "{{ vault_weave_password }}"

- name: Second router, given the first one
  weavenet.mesh.weave_router:
    peers: [192.0.2.11]
    password: "{{ vault_weave_password }}"
    nickname: host2

- name: Settings for every weavenet module in a play
  module_defaults:
    group/weavenet.mesh.weave:
      weave_bin: /opt/weavenet/venv/bin/weave
  block:
    - name: Stop the router, keep its state
      weavenet.mesh.weave_router:
        state: stopped

- name: Remove the router's state and bridge
  weavenet.mesh.weave_router:
    state: absent
"""

RETURN = r"""
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["connect --replace 192.0.2.11:6783"]
restart_reasons:
  description: Settings that differed and caused a restart (C(upgrade) for a new router version).
  returned: always
  type: list
  elements: str
  sample: ["mtu"]
name:
  description: The router's peer name (MAC-style).
  returned: when the router runs after the task
  type: str
  sample: "56:85:cb:1e:c3:23"
nickname:
  description: The router's nickname.
  returned: when the router runs after the task
  type: str
  sample: host2
encryption:
  description: Whether the router encrypts its connections.
  returned: when the router runs after the task
  type: bool
targets:
  description: The router's explicit connection targets.
  returned: when the router runs after the task
  type: list
  elements: str
  sample: ["192.0.2.11:6783"]
peers:
  description: Peers the router knows, as C(name(nickname)).
  returned: when the router runs after the task
  type: list
  elements: str
  sample: ["56:85:cb:1e:c3:23(host1)"]
connections:
  description: The router's connections (address, state, peer name and nickname, encrypted).
  returned: when the router runs after the task
  type: list
  elements: dict
running:
  description: Whether the router runs after the task (predicted in check mode).
  returned: always
  type: bool
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.weavenet.mesh.plugins.module_utils.weave_client import (
    COMMON_ARGS,
    WeaveClient,
    WeaveError,
    config_json,
    peers_plan,
    private_file_differs,
    write_private_file,
)
from ansible_collections.weavenet.mesh.plugins.module_utils.weave_settings import ROUTER_SETTINGS

SHOWN = [k for k, s in ROUTER_SETTINGS.items() if s["public"]]  # in the report's config: what diff mode shows


def _summary(report):
    r = report["router"]
    return dict(
        name=r.get("name"),
        nickname=r.get("nickname"),
        encryption=bool(r.get("encryption")),
        targets=list(r.get("targets") or []),
        peers=["%s(%s)" % (p.get("name"), p.get("nickname")) for p in r.get("peers") or []],
        connections=[dict(address=c.get("address"), state=c.get("state"), name=c.get("name"),
                          nickname=c.get("nickname"), encrypted=bool(c.get("encrypted")))
                     for c in r.get("connections") or []],
    )


def _state_view(report, present):
    """What diff mode shows: no password, only whether the router is encrypted."""
    if report is None:
        return dict(state="stopped" if present else "absent")
    r = report["router"]
    cfg = r.get("config") or {}
    view = dict(state="started", targets=sorted(r.get("targets") or []), encrypted=bool(cfg.get("encrypted")))
    for key in SHOWN:
        if cfg.get(key) is not None:
            view[key] = cfg[key]
    return view


class RouterManager(object):
    def __init__(self, module, client):
        self.module = module
        self.client = client
        p = module.params
        # the settings given (password included), as `weave launch --config` reads them
        self.config = dict((k, p[k]) for k in ROUTER_SETTINGS if p.get(k) not in (None, ""))
        self.password = self.config.get("password")
        self.peers = None if p.get("peers") is None else list(p["peers"])
        if self.peers is not None:
            self.config["peers"] = self.peers
        self.config_text = config_json(self.config)
        self.config_file = p.get("config_file")
        self.plan = None
        self.actions = []
        self.restart_reasons = []
        self.changed = False

    def do(self, action, func):
        self.actions.append(action)
        self.changed = True
        if not self.module.check_mode:
            func()

    def dry_run(self):
        """The router's verdict on these settings (also in check mode: it changes nothing)."""
        path = os.path.join(self.module.tmpdir, "weave-config.json")
        write_private_file(path, self.config_text)
        self.plan = self.client.dry_run(path)
        if self.plan["peers"] is not None:
            self.peers = self.plan["peers"]  # normalised by the router
        return self.plan

    # --- mutations ---------------------------------------------------------------------------------
    def _sync_config_file(self):
        if self.config_file and private_file_differs(self.config_file, self.config_text):
            self.do("write " + self.config_file, lambda: write_private_file(self.config_file, self.config_text))

    def _launch(self, replace=False):
        unit = self.module.params.get("systemd_unit")
        if unit:
            self._systemctl("start", unit)
        else:
            self.client.run(["launch"] + (["--replace"] if replace else [])
                            + ["--config", os.path.join(self.module.tmpdir, "weave-config.json")])
        if self.peers == []:  # launched without peers, it reconnects to its old targets: forget them
            report = self.client.report()
            old = list((report or {}).get("router", {}).get("targets") or [])
            if old:
                self.client.run(["forget"] + old)

    def _launch_action(self):
        self._sync_config_file()
        self.do("launch" + ("" if not self.peers else " " + " ".join(self.peers)), self._launch)

    def _stop(self):
        unit = self.module.params.get("systemd_unit")
        if unit:
            self._systemctl("stop", unit)
        else:
            self.client.run(["stop"])
        self._wait_stopped()

    def _restart_stop(self):
        # The router exits 0 keeping the fast path (SIGUSR2); under systemd the unit then goes inactive
        # (Restart=on-failure leaves it), and _launch starts it again.
        self.client.run(["stop", "--restart"])
        self._wait_stopped()

    def _wait_stopped(self, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.client.report() is None:
                return
            time.sleep(0.2)
        raise WeaveError("the weave router did not stop within %d s" % timeout)

    def _systemctl(self, verb, unit):
        systemctl = self.module.get_bin_path("systemctl", required=True)
        rc, out, err = self.module.run_command([systemctl, verb, unit])
        if rc != 0:
            raise WeaveError("systemctl %s %s failed: %s" % (verb, unit, (err or out).strip().splitlines()[-1:]))

    # --- states ------------------------------------------------------------------------------------
    def started(self, report):
        plan = self.dry_run()
        if report is None or not plan["running"]:
            self._launch_action()
            return
        if plan["restart"]:
            self.restart_reasons = [d for d in plan["differ"] if d != "peers"]
            self.do("stop", self._stop)
            self._launch_action()
            return
        if self.module.params["upgrade"]:
            self.restart_reasons = ["upgrade"]
            if self.module.params.get("systemd_unit"):
                self.do("restart (keeping the fast path)", self._restart_stop)
                self._launch_action()
            else:  # the new router loads before the old one stops (weave launch --replace)
                self._sync_config_file()
                self.do("launch --replace" + ("" if not self.peers else " " + " ".join(self.peers)),
                        lambda: self._launch(replace=True))
            return
        self._sync_config_file()
        if "peers" not in plan["differ"]:
            return
        how, peers = peers_plan(self.peers, list(report["router"].get("targets") or []))
        if how == "replace":
            self.do("connect --replace " + " ".join(peers), lambda: self.client.run(["connect", "--replace"] + peers))
        elif how == "forget":
            self.do("forget " + " ".join(peers), lambda: self.client.run(["forget"] + peers))

    def stopped(self, report):
        if report is not None:
            self.do("stop", self._stop)

    def absent(self, report):
        if report is not None or self.client.has_persisted_state():
            unit = self.module.params.get("systemd_unit")

            def reset():
                if unit and report is not None:
                    self._stop()
                self.client.run(["reset"])

            self.do("reset", reset)

    def predicted_after(self, before_view):
        state = self.module.params["state"]
        if state != "started":
            return dict(state=state)
        restarted = before_view.get("state") != "started" or bool(self.restart_reasons)
        after = {} if restarted else dict(before_view)
        after["state"] = "started"
        if self.peers is not None:
            after["targets"] = sorted(self.peers)
        elif "targets" not in after:
            after["targets"] = sorted(before_view.get("targets") or [])
        cfg = (self.plan or {}).get("config") or {}
        for key in SHOWN:  # after a (re)launch: what the router runs with; else only the given ones change
            if key in cfg and (restarted or key in self.config):
                after[key] = cfg[key]
        after["encrypted"] = bool(self.password)
        if "password" in self.restart_reasons:
            after["password_changed"] = True
        return after


def argument_spec():
    spec = dict(
        state=dict(type="str", default="started", choices=["started", "stopped", "absent"]),
        peers=dict(type="list", elements="str"),
        upgrade=dict(type="bool", default=False),
        systemd_unit=dict(type="str"),
        config_file=dict(type="path"),
    )
    for name, s in ROUTER_SETTINGS.items():
        spec[name] = dict(type=s["type"])
        if s["type"] == "list":
            spec[name]["elements"] = "str"
        if s["secret"]:
            spec[name]["no_log"] = True
    spec.update(COMMON_ARGS)
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_by=dict(systemd_unit=["config_file"]))
    p = module.params
    client = WeaveClient(module)
    try:
        client.check_installed()
        manager = RouterManager(module, client)
        report = client.report()
        present = report is not None or client.has_persisted_state()
        before = _state_view(report, present)
        getattr(manager, p["state"])(report)
        after = manager.predicted_after(before)
        result = dict(changed=manager.changed, actions=manager.actions, restart_reasons=manager.restart_reasons)
        final = report
        if manager.changed and not module.check_mode:
            final = client.report()
            if p["state"] == "started" and final is None:
                raise WeaveError("the weave router is not running after launch; see %s"
                                 % os.path.join(client.rundir, "weave.log"))
        result["running"] = (p["state"] == "started") if manager.changed else report is not None
        if final is not None and (p["state"] == "started" or not manager.changed):
            result.update(_summary(final))
        if module._diff:
            result["diff"] = dict(before=before, after=after)
    except WeaveError as e:
        module.fail_json(msg=str(e))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
