# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""weave_router's manager against a fake router: what it does for each current-versus-desired case."""

from __future__ import annotations

import pytest

from ansible_collections.weavenet.mesh.plugins.modules.weave_router import RouterManager, _state_view

SETTINGS = dict(nickname="h2", port=6783, conn_limit=100, fastdp=True, mtu=1376, discovery=True)


class FakeModule(object):
    def __init__(self, check_mode=False, **params):
        base = dict(state="started", peers=None, password=None, systemd_unit=None,
                    weave_bin="/x/weave", rundir=None, datadir=None)
        base.update(dict((k, None) for k in SETTINGS))
        base.update(params)
        self.params = base
        self.check_mode = check_mode


class FakeClient(object):
    def __init__(self, report=None, persisted=False):
        # the running password is known to the fake router only, never in its report
        self._password = report.pop("_password", None) if report else None
        self._report = report
        self.calls = []
        self.checked = []
        self.persisted = persisted

    def password_matches(self, password):
        self.checked.append(password)
        return self._password == password

    def run(self, args, extra_env=None, check=True):
        self.calls.append((list(args), dict(extra_env or {})))
        if args[0] == "stop":
            self._report = None
        return 0, "", ""

    def report(self):
        return self._report

    def has_persisted_state(self):
        return self.persisted


def running(targets=(), password=None, **overrides):
    cfg = dict(SETTINGS, encrypted=bool(password))
    cfg.update(overrides)
    router = {"name": "aa:bb", "nickname": cfg["nickname"], "targets": list(targets), "config": cfg,
              "peers": [], "connections": []}
    return {"version": "0.1.0", "router": router, "_password": password}


def manage(report, check_mode=False, persisted=False, **params):
    client = FakeClient(report, persisted)
    manager = RouterManager(FakeModule(check_mode=check_mode, **params), client)
    getattr(manager, manager.module.params["state"])(report)
    return manager, client


def test_launch_when_not_running_passes_password_in_environment_only():
    m, c = manage(None, peers=["192.0.2.11"], password="s3cret", **SETTINGS)
    assert m.changed and m.actions == ["launch 192.0.2.11:6783"]
    (argv, env), = c.calls
    assert argv[0] == "launch" and argv[-1] == "192.0.2.11:6783"
    assert "s3cret" not in " ".join(argv) and "s3cret" not in " ".join(m.actions)
    assert env == {"WEAVE_PASSWORD": "s3cret"}


def test_check_mode_predicts_without_running_anything():
    m, c = manage(None, check_mode=True, peers=["192.0.2.11"])
    assert m.changed and c.calls == []


def test_same_settings_and_peers_change_nothing():
    m, c = manage(running(["192.0.2.11:6783"], "pw"), peers=["192.0.2.11"], password="pw", **SETTINGS)
    assert not m.changed and c.calls == [] and m.actions == []


def test_only_peers_differ_connect_replace_without_restart():
    m, c = manage(running(["192.0.2.11:6783"], "pw"), peers=["192.0.2.11", "192.0.2.12"], password="pw",
                  **SETTINGS)
    assert m.changed and not m.restart_reasons
    assert [a for a, dummy in c.calls] == [["connect", "--replace", "192.0.2.11:6783", "192.0.2.12:6783"]]


def test_empty_peer_list_forgets_targets():
    m, c = manage(running(["192.0.2.11:6783"]), peers=[])
    assert [a for a, dummy in c.calls] == [["forget", "192.0.2.11:6783"]]


def test_peers_not_given_leaves_targets_alone():
    m, c = manage(running(["192.0.2.11:6783"]))
    assert not m.changed and c.calls == []


@pytest.mark.parametrize("change,reason", [
    (dict(mtu=1400), "mtu"), (dict(fastdp=False), "fastdp"), (dict(nickname="x"), "nickname"),
    (dict(discovery=False), "discovery"), (dict(conn_limit=5), "conn_limit"),
])
def test_setting_change_restarts(change, reason):
    params = dict(SETTINGS, **change)
    m, c = manage(running(["192.0.2.11:6783"]), **params)
    assert m.restart_reasons == [reason]
    assert [a[0] for a, dummy in c.calls] == ["stop", "launch"]
    assert c.calls[1][0][-1] == "192.0.2.11:6783"  # peers unmanaged: relaunched with its old targets


def test_password_change_restarts_and_encryption_off():
    m, c = manage(running([], "old"), password="new")
    assert m.restart_reasons == ["password"] and c.calls[1][1] == {"WEAVE_PASSWORD": "new"}
    assert c.checked == ["new"]  # asked the running router, which answered "not the same"
    m, c = manage(running([], "old"))
    assert m.restart_reasons == ["encryption"] and c.calls[1][1] == {} and c.checked == []


def test_same_password_is_checked_and_left_alone():
    m, c = manage(running([], "pw"), password="pw")
    assert not m.changed and c.checked == ["pw"] and c.calls == []
    m, c = manage(running([]), password="pw")  # unencrypted router: no need to ask, encryption differs
    assert m.restart_reasons == ["encryption"] and c.checked == []


def test_router_that_cannot_check_passwords_is_assumed_unchanged():
    report = running([], "old")
    client = FakeClient(report)
    client.password_matches = lambda password: None
    manager = RouterManager(FakeModule(password="new"), client)
    manager.started(report)
    assert not manager.changed and manager.restart_reasons == []


def test_stopped_and_absent():
    m, c = manage(running(), state="stopped")
    assert m.actions == ["stop"]
    m, c = manage(None, state="stopped")
    assert not m.changed
    m, c = manage(None, state="absent", persisted=True)
    assert m.actions == ["reset"] and c.calls[0][0] == ["reset"]
    m, c = manage(None, state="absent", persisted=False)
    assert not m.changed


def test_diff_never_shows_the_password():
    report = running(["192.0.2.11:6783"], "pw")
    m, dummy = manage(report, check_mode=True, password="other", **SETTINGS)
    before = _state_view(report, True)
    after = m.predicted_after(before)
    text = repr(before) + repr(after)
    assert "other" not in text and "pw" not in text.replace("password_changed", "")
    assert after["password_changed"] is True and before["encrypted"] is True


def test_diff_is_equal_when_nothing_changes():
    report = running(["192.0.2.11:6783"], "pw")
    m, dummy = manage(report, peers=["192.0.2.11"], password="pw", **SETTINGS)
    before = _state_view(report, True)
    assert m.predicted_after(before) == before
