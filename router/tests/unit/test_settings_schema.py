"""The router's settings schema and everything derived from it: CLI flags and the argv `weave launch`
hands the background router, --config files, the dry-run comparison, and the Ansible collection's files
(scripts/gen-settings), which must match what the schema generates now."""

from __future__ import annotations

import json
import os

import pytest

from weavenet.cli import main as cli
from weavenet.weaver import settings
from weavenet.weaver.config import SETTINGS, RouterConfig

from . import repo_scripts
from .repo_scripts import REPO


def _gen():
    return repo_scripts.load("gen-settings")


def test_collection_files_are_generated_from_the_schema():
    stale = [p for p, text in _gen().render().items() if (REPO / p).read_text() != text]
    assert not stale, f"run scripts/gen-settings: {stale} disagree with the router's settings"


def test_collection_has_no_peer_parser_and_no_copy_of_the_restart_rules():
    src = (REPO / "plugins/module_utils/weave_client.py").read_text()
    for dup in ("def normalize_peer", "RESTART_SETTINGS", "_canonical", "def launch_args"):
        assert dup not in src
    mod = (REPO / "plugins/modules/weave_router.py").read_text()
    assert "576" not in mod and "65535" not in mod  # ranges come from the router


def test_generated_table_carries_ranges_defaults_and_secrets():
    ns: dict = {}
    exec((REPO / "plugins/module_utils/weave_settings.py").read_text(), ns)
    table = ns["ROUTER_SETTINGS"]
    assert table["mtu"]["range"] == [576, 9000] and table["mtu"]["default"] is None  # derived from the underlay
    assert table["password"]["secret"] and not table["password"]["public"]
    assert {"api_port", "dns_upstream", "max_peers"} <= set(table) and "peers" not in table
    assert table["fastdp"]["flag"] == "--no-fastdp"


def parse(*argv: str) -> tuple[RouterConfig, set[str]]:
    return cli._config_from(cli.build_parser().parse_args(list(argv)))


def test_every_setting_has_a_flag_and_router_argv_round_trips(monkeypatch):
    monkeypatch.delenv("WEAVE_PASSWORD", raising=False)
    cfg, given = parse("launch", "--nickname", "n1", "--name", "02:00:00:00:00:01", "--port", "7000",
                       "--api-port", "0", "--metrics-addr", "0.0.0.0:6782", "--conn-limit", "5", "--max-peers", "50",
                       "--no-discovery", "--mtu", "1400",
                       "--no-fastdp", "--ipalloc-range", "10.0.0.0/16", "--ipalloc-default-subnet", "10.0.1.0/24",
                       "--ipalloc-init", "consensus=3", "--no-dns", "--dns-domain", "m.", "--dns-ttl", "5",
                       "--dns-upstream", "192.0.2.53", "--password", "pw", "h1", "192.0.2.2:7000")
    assert given == {s.name for s in SETTINGS}  # every setting has a flag
    argv = cli._router_argv(cfg)
    assert "pw" not in argv  # the password goes in the environment
    monkeypatch.setenv("WEAVE_PASSWORD", "pw")
    back, _ = parse("router", *argv)
    assert back == cfg
    assert cli._router_argv(parse("router")[0])[-1] != "--"  # no peers: no separator


def test_validation_names_the_flag():
    with pytest.raises(ValueError, match=r"^invalid --mtu 65535: must be 576-9000$"):
        parse("launch", "--mtu", "65535")
    with pytest.raises(ValueError, match=r"^invalid --dns-upstream 'x': expected an IP address$"):
        parse("launch", "--dns-upstream", "x")


def write(tmp_path, data, mode=0o600) -> str:
    path = tmp_path / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    os.chmod(path, mode)
    return str(path)


def test_config_file_with_flags_overriding_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WEAVE_PASSWORD", "from-env")
    path = write(tmp_path, {"mtu": 1400, "password": "from-file", "peers": ["192.0.2.1"], "dns_ttl": None})
    cfg, given = parse("launch", "--config", path, "--mtu", "1500")
    assert (cfg.mtu, cfg.password, cfg.peers, cfg.dns_ttl) == (1500, "from-file", ["192.0.2.1:6783"], 1)
    assert given == {"mtu", "password", "peers"}  # null: not given
    cfg, _ = parse("launch", "--config", write(tmp_path, {"mtu": 1400}, 0o644))
    assert cfg.password == "from-env"  # no password in the file: readable is fine, the environment's applies


@pytest.mark.parametrize("data, mode, says", [
    ({"password": "pw"}, 0o644, r"readable by group or others \(mode 0644\): chmod 600"),
    ({"password": "pw"}, 0o640, "readable by group or others"),
    ({"mtux": 1}, 0o600, "unknown setting 'mtux'"),
    ({"mtu": True}, 0o600, "mtu must be an integer"),
    ({"mtu": "1400"}, 0o600, "mtu must be an integer"),
    ({"peers": "192.0.2.1"}, 0o600, "peers must be a list of strings"),
    ({"dns": 1}, 0o600, "dns must be true or false"),
    ([1], 0o600, "must hold a JSON object"),
    ("{", 0o600, "is not JSON"),
    (" " * (settings.MAX_CONFIG_BYTES + 1), 0o600, "larger than"),
    ({"mtu": 70000}, 0o600, "invalid --mtu 70000"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, data, mode, says):
    path = write(tmp_path, data, mode)
    with pytest.raises(ValueError, match=says) as e:
        parse("launch", "--config", path)
    assert "\n" not in str(e.value)


def test_config_path_that_is_not_a_file(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        parse("launch", "--config", str(tmp_path))
    with pytest.raises(ValueError, match="cannot read --config"):
        parse("launch", "--config", str(tmp_path / "missing.json"))


CURRENT = RouterConfig(nickname="h1", password="pw")
CURRENT.validate()


def diff(argv, current=None, targets=(), matches=None):
    cfg, given = parse("launch", *argv)
    current = current or dict(CURRENT.public(), name="02:00:00:00:00:01")
    return settings.differences(SETTINGS, cfg.values(), given, current, list(targets), matches)


def test_differences_compare_only_what_is_given_in_canonical_form(monkeypatch):
    monkeypatch.setenv("WEAVE_PASSWORD", "pw")
    assert diff(["--nickname", "h1", "--dns-domain", "WEAVE.local", "--ipalloc-range", "10.32.0.0/12"]) == []
    assert diff(["--mtu", "1400", "--api-port", "0", "--dns-upstream", "192.0.2.53", "--max-peers", "9"]) == [
        "api_port", "max_peers", "mtu", "dns_upstream"]
    assert diff(["--name", "02:00:00:00:00:02"]) == ["name"]
    old = {k: v for k, v in CURRENT.public().items() if k != "max_peers"}  # a router that does not report it
    assert diff(["--max-peers", "9"], current=old) == []
    assert diff(["192.0.2.1"], targets=["192.0.2.1:6783"]) == []
    assert diff(["192.0.2.2"], targets=["192.0.2.1:6783"]) == ["peers"]


def test_differences_in_encryption_and_password(monkeypatch):
    monkeypatch.delenv("WEAVE_PASSWORD", raising=False)
    assert diff([]) == ["encryption"]
    assert diff(["--password", "pw"], matches=True) == []
    assert diff(["--password", "other"], matches=False) == ["password"]
    assert diff(["--password", "other"], matches=None) == []  # a router that cannot tell: assumed the same
    assert settings.needs_restart(SETTINGS, ["peers"]) is False
    assert settings.needs_restart(SETTINGS, ["peers", "mtu"]) and settings.needs_restart(SETTINGS, ["password"])


class FakeRouterClient:
    """The running router's API as the dry run sees it."""

    def __init__(self, password: str | None, status: int | None = None) -> None:
        cfg = RouterConfig(nickname="h1", password=password)
        cfg.validate()
        self.router = {"name": "02:00:00:00:00:01", "config": cfg.public(), "targets": ["192.0.2.1:6783"]}
        self.password, self.status, self.asked = password, status, []

    def report(self) -> dict:
        return {"router": self.router}

    def json(self, method: str, url: str, body: dict) -> dict:
        self.asked.append((method, url, body))
        if self.status:
            raise cli.APIError("not found", self.status)
        return {"matches": body["password"] == self.password}


def test_dry_run_asks_the_running_router(monkeypatch, tmp_path):
    monkeypatch.delenv("WEAVE_PASSWORD", raising=False)
    fake = FakeRouterClient("secret")
    monkeypatch.setattr(cli.daemon, "running_pid", lambda paths: 4242)
    monkeypatch.setattr(cli, "_client", lambda paths: fake)
    path = write(tmp_path, {"password": "other", "mtu": 1400, "peers": ["192.0.2.1"]})
    out = cli.dry_run(*parse("launch", "--config", path), paths=None)
    assert out["running"] and out["differ"] == ["mtu", "password"] and out["restart"] is True
    assert fake.asked == [("POST", "/password/check", {"password": "other"})]
    assert out["peers"] == ["192.0.2.1:6783"] and "other" not in json.dumps(out)
    out = cli.dry_run(*parse("launch", "--password", "secret", "192.0.2.9"), paths=None)
    assert out["differ"] == ["peers"] and out["restart"] is False
    old = FakeRouterClient("secret", status=404)  # predates /password/check
    monkeypatch.setattr(cli, "_client", lambda paths: old)
    assert cli.dry_run(*parse("launch", "--password", "x"), paths=None)["differ"] == []
    monkeypatch.setattr(cli.daemon, "running_pid", lambda paths: None)
    out = cli.dry_run(*parse("launch", "--mtu", "1400"), paths=None)
    assert out == {"running": False, "differ": [], "restart": False, "config": out["config"], "peers": None}
    assert out["config"]["mtu"] == 1400 and out["config"]["encrypted"] is False
