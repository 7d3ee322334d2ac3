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
  - Idempotent. A running router whose settings match is left alone; when only the peer list differs the
    targets are changed with C(weave connect --replace) or C(weave forget), without a restart; when a setting
    that needs a restart differs (nickname, port, connection limit, MTU, fast path, discovery, IPAM range,
    DNS settings, encryption or password) the router is stopped and launched again.
  - Settings left unset are not compared, and the router's defaults apply when it is launched.
  - The password is handed to the router in the environment (never on a command line) and never appears in
    the module's output, diff or logs. A changed password is detected by asking the running router whether
    it is the same (C(weave password-check), the router's authenticated C(POST /password/check); the report
    carries no hash of it); a router too old to answer is assumed to have it.
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
  password:
    description:
      - Encrypt the mesh with this password. When not given, the router runs unencrypted.
    type: str
  nickname:
    description: The name shown for this peer (the router's default is the host name).
    type: str
  port:
    description: TCP (and sleeve UDP) port for peer connections.
    type: int
  conn_limit:
    description: Maximum number of connections.
    type: int
  fastdp:
    description: Use the kernel VXLAN fast path between unencrypted peers.
    type: bool
  mtu:
    description: Overlay MTU.
    type: int
  discovery:
    description: Connect to peers learned from gossip (so a chain launch ends in a full mesh).
    type: bool
  ipalloc_range:
    description: The range the router's IPAM allocates from (C(--ipalloc-range); the router's default 10.32.0.0/12).
    type: str
  ipalloc_default_subnet:
    description: The subnet of C(net:default) allocations (C(--ipalloc-default-subnet); default the whole range).
    type: str
  dns:
    description: Run weaveDNS (C(false) is C(--no-dns)).
    type: bool
  dns_domain:
    description: The domain weaveDNS answers for (C(--dns-domain); the router's default C(weave.local.)).
    type: str
  dns_ttl:
    description: TTL of weaveDNS answers in seconds (C(--dns-ttl)).
    type: int
  systemd_unit:
    description:
      - Start, stop and restart the router through this systemd unit instead of C(weave launch) and C(weave stop).
      - The unit must launch the router with the same settings (the C(weavenet.mesh.router) role writes both).
    type: str
extends_documentation_fragment:
  - weavenet.mesh.weave
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
  description: Settings that differed and caused a restart.
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
    RESTART_SETTINGS,
    WeaveClient,
    WeaveError,
    launch_args,
    normalize_peers,
    peers_plan,
    router_settings_diff,
    running_config,
)


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
    cfg = running_config(r)
    view = dict(state="started", targets=sorted(normalize_peers(r.get("targets") or [])),
                encrypted=bool(cfg.get("encrypted")))
    for key in RESTART_SETTINGS:
        if cfg.get(key) is not None:
            view[key] = cfg[key]
    return view


class RouterManager(object):
    def __init__(self, module, client):
        self.module = module
        self.client = client
        p = module.params
        self.settings = dict((k, p.get(k)) for k in RESTART_SETTINGS)
        self.password = p.get("password") or None
        self.peers = None if p.get("peers") is None else normalize_peers(p["peers"])
        self.actions = []
        self.restart_reasons = []
        self.changed = False

    def do(self, action, func):
        self.actions.append(action)
        self.changed = True
        if not self.module.check_mode:
            func()

    # --- mutations ---------------------------------------------------------------------------------
    def _launch(self, peers):
        unit = self.module.params.get("systemd_unit")
        if unit:
            self._systemctl("start", unit)
            if peers:
                self.client.run(["connect", "--replace"] + peers)
            return
        env = {"WEAVE_PASSWORD": self.password} if self.password else None
        self.client.run(["launch"] + launch_args(self.settings, peers), extra_env=env)
        if self.peers == []:  # launched without peers, it reconnects to its old targets: forget them
            report = self.client.report()
            old = list((report or {}).get("router", {}).get("targets") or [])
            if old:
                self.client.run(["forget"] + old)

    def _stop(self):
        unit = self.module.params.get("systemd_unit")
        if unit:
            self._systemctl("stop", unit)
        else:
            self.client.run(["stop"])
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
        if report is None:
            peers = self.peers or []
            self.do("launch" + ("" if not peers else " " + " ".join(peers)), lambda: self._launch(peers))
            return
        router = report["router"]
        current = running_config(router)
        matches = None
        if self.password and current.get("encrypted"):  # the only case where the password itself matters
            matches = self.client.password_matches(self.password)
        reasons = router_settings_diff(self.settings, current, self.password, matches)
        if reasons:
            self.restart_reasons = reasons
            # with peers unmanaged, relaunch with the targets the router had
            peers = self.peers if self.peers is not None else list(router.get("targets") or [])
            self.do("stop", self._stop)
            self.do("launch" + ("" if not peers else " " + " ".join(peers)), lambda: self._launch(peers))
            return
        if self.peers is None:
            return
        how, peers = peers_plan(self.peers, normalize_peers(router.get("targets") or []))
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
        after = dict(before_view) if before_view.get("state") == "started" and not self.restart_reasons else {}
        after["state"] = "started"
        if self.peers is not None:
            after["targets"] = sorted(self.peers)
        elif "targets" not in after:
            after["targets"] = sorted(before_view.get("targets") or [])
        for key in RESTART_SETTINGS:
            if self.settings.get(key) is not None and (key in self.restart_reasons or key not in after):
                after[key] = self.settings[key]
            elif self.restart_reasons and key in before_view:
                after[key] = before_view[key]
        after["encrypted"] = bool(self.password)
        if "password" in self.restart_reasons:
            after["password_changed"] = True
        return after


def main():
    argument_spec = dict(
        state=dict(type="str", default="started", choices=["started", "stopped", "absent"]),
        peers=dict(type="list", elements="str"),
        password=dict(type="str", no_log=True),
        nickname=dict(type="str"),
        port=dict(type="int"),
        conn_limit=dict(type="int"),
        fastdp=dict(type="bool"),
        mtu=dict(type="int"),
        discovery=dict(type="bool"),
        ipalloc_range=dict(type="str"),
        ipalloc_default_subnet=dict(type="str"),
        dns=dict(type="bool"),
        dns_domain=dict(type="str"),
        dns_ttl=dict(type="int"),
        systemd_unit=dict(type="str"),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    for key in ("conn_limit", "mtu", "port"):
        if p.get(key) is not None and p[key] <= 0:
            module.fail_json(msg="%s must be a positive number, got %d" % (key, p[key]))
    if p.get("mtu") is not None and not 576 <= p["mtu"] <= 65535:
        module.fail_json(msg="mtu must be between 576 and 65535, got %d" % p["mtu"])

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
