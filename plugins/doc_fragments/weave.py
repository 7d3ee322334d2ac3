# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Options and attributes every weavenet.mesh module shares: how to reach the router instance."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  weave_bin:
    description:
      - Path of the C(weave) command on the managed host.
      - Default - C(weave) on C(PATH) (the router role links it as C(/usr/local/bin/weave)), else
        C(/opt/weavenet/venv/bin/weave).
    type: path
  rundir:
    description: The router instance's run directory (C(WEAVE_RUNDIR)); default C(/run/weave).
    type: path
  datadir:
    description: The router instance's data directory (C(WEAVE_DATADIR)); default C(/var/lib/weave).
    type: path
attributes:
  check_mode:
    description: Predicts C(changed) from the current state without changing anything.
    support: full
  diff_mode:
    description: Shows the state before and after (never a password).
    support: full
  action_group:
    description: Use C(group/weavenet.mesh.weave) in C(module_defaults) to set options for all weavenet modules.
    support: full
    membership:
      - weavenet.mesh.weave
"""
