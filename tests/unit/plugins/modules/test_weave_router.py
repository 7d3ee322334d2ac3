# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""weave_router's manager against a fake router: what it does for each current-versus-desired case."""

from __future__ import annotations

import json

import pytest

from ansible_collections.weavenet.mesh.plugins.module_utils.weave_client import WeaveError
from ansible_collections.weavenet.mesh.plugins.module_utils.weave_settings import ROUTER_SETTINGS
from ansible_collections.weavenet.mesh.plugins.modules.weave_router import RouterManager, _state_view, argument_spec

SETTINGS = dict(nickname="h2", port=6783, conn_limit=100, fastdp=True, mtu=1376, discovery=True)


class FakeModule(object):
    def __init__(self, tmpdir, check_mode=False, **params):
        base = dict(state="started", peers=None, upgrade=False, systemd_unit=None, config_file=None,
                    weave_bin="/x/weave", rundir=None, datadir=None)
        base.update(dict((k, None) for k in ROUTER_SETTINGS))
        base.update(params)
        self.params = base
        self.check_mode = check_mode
        self.tmpdir = str(tmpdir)
        self.systemctl = []

    def get_bin_path(self, name, required=False):
        return "/bin/" + name

    def run_command(self, argv):
        self.systemctl.append(argv[1:])
        return 0, "", ""


class FakeClient(object):
    """A router that answers `weave launch --dry-run` the way the real one does (a few settings only:
    the real comparison is tested in router/tests/unit/test_settings_schema.py)."""

    def __init__(self, report=None, persisted=False):
        # the running password is known to the fake router only, never in its report
        self._password = report.pop("_password", None) if report else None
        self._report = report
        self.calls = []
        self.dry_runs = []
        self.persisted = persisted

    def dry_run(self, path):
        with open(path) as f:
            want = json.load(f)
        self.dry_runs.append(want)
        peers = None if "peers" not in want else [p if ":" in p else p + ":6783" for p in want["peers"]]
        config = dict(want, encrypted="password" in want)
        config.pop("password", None)
        config.pop("peers", None)
        if self._report is None:
            return dict(running=False, differ=[], restart=False, config=config, peers=peers)
        router = self._report["router"]
        have = router["config"]
        differ = [k for k in want if k in have and have[k] != want[k]]
        if peers is not None and set(peers) != set(router["targets"]):
            differ.append("peers")
        if ("password" in want) != have["encrypted"]:
            differ.append("encryption")
        elif "password" in want and want["password"] != self._password:
            differ.append("password")
        return dict(running=True, differ=differ, restart=bool(set(differ) - {"peers"}), config=dict(have, **config),
                    peers=peers)

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


@pytest.fixture
def manage(tmp_path):
    def manage(report, check_mode=False, persisted=False, **params):
        client = FakeClient(report, persisted)
        manager = RouterManager(FakeModule(tmp_path, check_mode=check_mode, **params), client)
        getattr(manager, manager.module.params["state"])(report)
        return manager, client
    return manage


def test_argument_spec_comes_from_the_router_schema():
    spec = argument_spec()
    for name, s in ROUTER_SETTINGS.items():
        assert spec[name]["type"] == s["type"] and spec[name].get("no_log", False) == s["secret"]
    assert {"api_port", "dns_upstream", "max_peers"} <= set(spec) and spec["dns_upstream"]["elements"] == "str"


def test_launch_when_not_running_passes_password_in_the_private_file_only(manage, tmp_path):
    m, c = manage(None, peers=["192.0.2.11"], password="s3cret", **SETTINGS)
    assert m.changed and m.actions == ["launch 192.0.2.11:6783"]
    (argv, env), = c.calls
    assert argv == ["launch", "--config", str(tmp_path / "weave-config.json")] and env == {}
    assert "s3cret" not in " ".join(m.actions)
    assert c.dry_runs == [dict(SETTINGS, peers=["192.0.2.11"], password="s3cret")]
    assert oct((tmp_path / "weave-config.json").stat().st_mode & 0o777) == "0o600"


def test_systemd_writes_the_config_file_and_starts_the_unit(manage, tmp_path):
    conf = tmp_path / "etc" / "config.json"
    conf.parent.mkdir()
    m, c = manage(None, peers=["192.0.2.11"], password="pw", systemd_unit="weave.service", config_file=str(conf))
    assert m.actions == ["write " + str(conf), "launch 192.0.2.11:6783"]
    assert m.module.systemctl == [["start", "weave.service"]] and c.calls == []
    assert json.loads(conf.read_text()) == {"peers": ["192.0.2.11"], "password": "pw"}
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
    # running with these settings, the file unchanged: nothing to do
    m, c = manage(running(["192.0.2.11:6783"], "pw"), peers=["192.0.2.11"], password="pw",
                  systemd_unit="weave.service", config_file=str(conf))
    assert not m.changed and m.module.systemctl == []


def test_check_mode_predicts_without_running_anything(manage):
    m, c = manage(None, check_mode=True, peers=["192.0.2.11"])
    assert m.changed and c.calls == []


def test_same_settings_and_peers_change_nothing(manage):
    m, c = manage(running(["192.0.2.11:6783"], "pw"), peers=["192.0.2.11"], password="pw", **SETTINGS)
    assert not m.changed and c.calls == [] and m.actions == []


def test_only_peers_differ_connect_replace_without_restart(manage):
    m, c = manage(running(["192.0.2.11:6783"], "pw"), peers=["192.0.2.11", "192.0.2.12"], password="pw",
                  **SETTINGS)
    assert m.changed and not m.restart_reasons
    assert [a for a, dummy in c.calls] == [["connect", "--replace", "192.0.2.11:6783", "192.0.2.12:6783"]]


def test_empty_peer_list_forgets_targets(manage):
    m, c = manage(running(["192.0.2.11:6783"]), peers=[])
    assert [a for a, dummy in c.calls] == [["forget", "192.0.2.11:6783"]]


def test_peers_not_given_leaves_targets_alone(manage):
    m, c = manage(running(["192.0.2.11:6783"]))
    assert not m.changed and c.calls == []


@pytest.mark.parametrize("change,reason", [
    (dict(mtu=1400), "mtu"), (dict(fastdp=False), "fastdp"), (dict(nickname="x"), "nickname"),
    (dict(discovery=False), "discovery"), (dict(conn_limit=5), "conn_limit"),
])
def test_setting_change_restarts(manage, change, reason):
    params = dict(SETTINGS, **change)
    m, c = manage(running(["192.0.2.11:6783"]), **params)
    assert m.restart_reasons == [reason]
    assert [a[0] for a, dummy in c.calls] == ["stop", "launch"]
    assert "peers" not in c.dry_runs[0]  # peers unmanaged: the router relaunches with its persisted targets


def test_upgrade_checks_settings_first_then_restarts_keeping_the_fast_path(manage, tmp_path):
    m, c = manage(running(["192.0.2.11:6783"]), upgrade=True, peers=["192.0.2.11"], **SETTINGS)
    assert m.restart_reasons == ["upgrade"] and len(c.dry_runs) == 1
    # the new router loads before it stops the old one (weave launch --replace); under systemd: stop, start
    assert [a[:2] for a, dummy in c.calls] == [["launch", "--replace"]] and m.actions[0].startswith("launch --replace")
    m, c = manage(running(["192.0.2.11:6783"]), upgrade=True, systemd_unit="weave.service",
                  config_file=str(tmp_path / "weave.json"), **SETTINGS)
    assert [a for a, dummy in c.calls] == [["stop", "--restart"]] and m.module.systemctl == [["start", "weave.service"]]
    # not running: a plain launch; a setting that needs a restart: the plain stop (the new settings may drop
    # the fast path, e.g. a password)
    m, c = manage(None, upgrade=True, **SETTINGS)
    assert m.actions and [a[0] for a, dummy in c.calls] == ["launch"]
    m, c = manage(running(["192.0.2.11:6783"]), upgrade=True, **dict(SETTINGS, mtu=1400))
    assert [a for a, dummy in c.calls][0] == ["stop"] and m.restart_reasons == ["mtu"]
    m, c = manage(running(["192.0.2.11:6783"]), upgrade=True, check_mode=True, **SETTINGS)
    assert m.changed and c.calls == []


def test_a_bad_setting_fails_with_the_routers_reason(tmp_path):
    class Refusing(FakeClient):
        def dry_run(self, path):
            raise WeaveError("weave launch failed: invalid --mtu 70000: must be 576-9000")

    manager = RouterManager(FakeModule(tmp_path, mtu=70000), Refusing(running()))
    with pytest.raises(WeaveError, match="576-9000"):
        manager.started(running())
    assert manager.actions == []


def test_password_change_restarts_and_encryption_off(manage):
    m, c = manage(running([], "old"), password="new")
    assert m.restart_reasons == ["password"] and [a[0] for a, dummy in c.calls] == ["stop", "launch"]
    assert c.dry_runs == [{"password": "new"}]  # the router compares it (constant time), not the module
    m, c = manage(running([], "old"))
    assert m.restart_reasons == ["encryption"] and c.dry_runs == [{}]


def test_same_password_is_left_alone(manage):
    m, c = manage(running([], "pw"), password="pw")
    assert not m.changed and c.calls == []
    m, c = manage(running([]), password="pw")
    assert m.restart_reasons == ["encryption"]


def test_stopped_and_absent(manage):
    m, c = manage(running(), state="stopped")
    assert m.actions == ["stop"]
    m, c = manage(None, state="stopped")
    assert not m.changed
    m, c = manage(None, state="absent", persisted=True)
    assert m.actions == ["reset"] and c.calls[0][0] == ["reset"]
    m, c = manage(None, state="absent", persisted=False)
    assert not m.changed


def test_diff_never_shows_the_password(manage):
    report = running(["192.0.2.11:6783"], "pw")
    m, dummy = manage(report, check_mode=True, password="other", **SETTINGS)
    before = _state_view(report, True)
    after = m.predicted_after(before)
    text = repr(before) + repr(after)
    assert "other" not in text and "pw" not in text.replace("password_changed", "")
    assert after["password_changed"] is True and before["encrypted"] is True


def test_diff_is_equal_when_nothing_changes(manage):
    report = running(["192.0.2.11:6783"], "pw")
    m, dummy = manage(report, peers=["192.0.2.11"], password="pw", **SETTINGS)
    before = _state_view(report, True)
    assert m.predicted_after(before) == before
