# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import pytest

from ansible_collections.weavenet.mesh.plugins.module_utils.weave_client import WeaveClient, WeaveError


class Exited(Exception):
    pass


class Module(object):
    def __init__(self, check_mode):
        self.params = dict(weave_bin="/nonexistent/weave", rundir=None, datadir=None)
        self.check_mode = check_mode
        self.exited = None

    def exit_json(self, **kwargs):
        self.exited = kwargs
        raise Exited()


def test_missing_weave_fails_with_its_path():
    with pytest.raises(WeaveError, match="/nonexistent/weave"):
        WeaveClient(Module(check_mode=False)).check_installed()


def test_missing_weave_in_check_mode_is_a_predicted_change():
    # --check --diff on a fresh fleet: the install was only predicted, so the modules predict too
    m = Module(check_mode=True)
    with pytest.raises(Exited):
        WeaveClient(m).check_installed()
    assert m.exited["changed"] is True
    assert "/nonexistent/weave" in m.exited["msg"]
