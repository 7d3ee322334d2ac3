#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: weave_expose
short_description: Give the managed host addresses on the weavenet overlay, or take them away
version_added: "0.1.0"
description:
  - Adds addresses to the host's C(weave) bridge (C(weave expose)) so the host reaches the containers of those
    subnets on every host of the mesh, or removes them (C(weave hide)).
  - Reads the current addresses from C(weave report) (C(router.exposed)); idempotent.
author:
  - weavenet developers (@weavenet)
options:
  cidrs:
    description: Addresses with prefix length, such as C(10.0.0.254/24).
    type: list
    elements: str
    required: true
  state:
    description: C(present) exposes the addresses, C(absent) hides them.
    type: str
    choices: [present, absent]
    default: present
  exclusive:
    description: With C(state=present), also hide exposed addresses that are not listed.
    type: bool
    default: false
extends_documentation_fragment:
  - weavenet.mesh.weave
notes:
  - The router must be running (M(weavenet.mesh.weave_router)).
seealso:
  - module: weavenet.mesh.weave_router
"""

EXAMPLES = r"""
- name: Let this host reach the frontend subnet
  weavenet.mesh.weave_expose:
    cidrs: [10.0.0.254/24]

- name: Take it away again
  weavenet.mesh.weave_expose:
    cidrs: [10.0.0.254/24]
    state: absent
"""

RETURN = r"""
exposed:
  description: The host's overlay addresses after the task (predicted in check mode).
  returned: always
  type: list
  elements: str
  sample: ["10.0.0.254/24"]
added:
  description: Addresses exposed by this task.
  returned: always
  type: list
  elements: str
removed:
  description: Addresses hidden by this task.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.weavenet.mesh.plugins.module_utils.weave_client import (
    COMMON_ARGS,
    WeaveClient,
    WeaveError,
    cidrs_plan,
    normalize_cidrs,
)


def plan(desired, current, state, exclusive):
    """(to_add, to_remove) for the expose state."""
    if state == "absent":
        return [], [c for c in desired if c in current]
    return cidrs_plan(desired, current, exclusive)


def main():
    argument_spec = dict(
        cidrs=dict(type="list", elements="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        exclusive=dict(type="bool", default=False),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    client = WeaveClient(module)
    try:
        desired = normalize_cidrs(p["cidrs"])
        if not desired and p["state"] == "present" and not p["exclusive"]:
            raise WeaveError("cidrs must not be empty")
        report = None
        try:
            client.check_installed()
            report = client.report()
        except WeaveError:
            if not module.check_mode:
                raise
        if report is None and module.check_mode and p["state"] == "present":
            # --check on a fresh fleet: the router is installed and launched by the same (checked) run
            module.warn("the weave router is not running (yet): predicted from the declaration only")
            report = {"router": {"exposed": []}}
        if report is None:
            raise WeaveError("the weave router is not running on this host (start it with weave_router first)")
        current = normalize_cidrs(report["router"].get("exposed") or [])
        to_add, to_remove = plan(desired, current, p["state"], p["exclusive"])
        if not module.check_mode:
            if to_remove:
                client.run(["hide"] + to_remove)
            if to_add:
                client.run(["expose"] + to_add)
    except WeaveError as e:
        module.fail_json(msg=str(e))
    after = [c for c in current if c not in to_remove] + to_add
    result = dict(changed=bool(to_add or to_remove), exposed=after, added=to_add, removed=to_remove)
    if module._diff:
        result["diff"] = dict(before=dict(exposed=sorted(current)), after=dict(exposed=sorted(after)))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
