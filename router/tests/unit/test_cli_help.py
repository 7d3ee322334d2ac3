"""The `weave` command line without a router: every subcommand's --help (exit 0), a bad flag for each (exit 2,
one line), malformed addresses refused before the router is asked (2), a refused request (1), Weave's
spellings (`dns-add -h FQDN`, `ip:CIDR`), and `weave ps` in Weave's plain form."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from weavenet.api.format import ps_lines, ps_plain
from weavenet.cli.main import build_parser, main


@pytest.fixture(autouse=True)
def no_router(tmp_path, monkeypatch):
    monkeypatch.setenv("WEAVE_RUNDIR", str(tmp_path / "run"))
    monkeypatch.setenv("WEAVE_DATADIR", str(tmp_path / "data"))
    monkeypatch.delenv("WEAVE_PASSWORD", raising=False)


def commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:   # argparse's own --help
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_the_walk_covers_the_commands_users_know():
    assert {"launch", "run", "attach", "detach", "expose", "hide", "ps", "dns-add", "dns-remove", "status",
            "stop", "reset", "connect", "forget"} <= set(commands())


@pytest.mark.parametrize("cmd", commands())
def test_every_subcommand_has_help(cmd, capsys):
    code, out, err = run(capsys, cmd, "--help")
    assert code == 0 and out.startswith("usage:") and err == "", (cmd, out, err)


@pytest.mark.parametrize("cmd", commands())
def test_every_subcommand_refuses_a_bad_flag_in_one_line_with_status_2(cmd, capsys):
    code, out, err = run(capsys, cmd, "--no-such-flag")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("weave: "), (cmd, err)


def test_top_level_help_names_the_environment_and_exit_codes(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for word in ("WEAVE_RUNDIR", "WEAVE_DATADIR", "WEAVE_LOG_LEVEL", "WEAVE_PASSWORD", "DOCKER_HOST", "exit status",
                 "2 usage error", "1 refused", "ip:CIDR", "net:default"):
        assert word in out, word
    code, _, err = run(capsys)
    assert code == 2 and "missing command" in err


def test_run_help_lists_the_docker_options_it_takes(capsys):
    code, out, _ = run(capsys, "run", "--help")
    assert code == 0 and out.startswith("usage: weave run")
    for opt in ("--name X", "-e|--env X", "-p|--publish X", "--restart X", "--network X", "--dns-search X", "--rm"):
        assert opt in out, opt
    code, _, err = run(capsys, "run")
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", ["dns-add", "dns-remove"])
def test_dns_add_help_and_weaves_hostname_flag(cmd, capsys):
    for flag in ("-h", "--help"):
        code, out, _ = run(capsys, cmd, flag)
        assert code == 0 and "--hostname" in out and "FQDN" in out
    # -h FQDN still names the host (Weave's spelling): parsing passes, then the router is not running.
    code, _, err = run(capsys, cmd, "c1", "-h", "x.weave.local")
    assert code == 1 and "not running" in err
    code, _, err = run(capsys, cmd, "c1", "--hostname", "x.weave.local")
    assert code == 1 and "not running" in err
    code, _, err = run(capsys, cmd, "10.0.0.300", "c1")
    assert code == 2 and "invalid IP address" in err


@pytest.mark.parametrize("argv", [("attach", "10.0.0.300/24", "c1"), ("attach", "ip:10.0.0.1", "c1"),
                                  ("detach", "net:10.2.0.0", "c1"), ("expose", "bogus"), ("hide", "ip:"),
                                  ("run", "net:10.2.0.1/33", "busybox"), ("launch", "--port", "70000"),
                                  ("launch", "not a host!")])
def test_malformed_arguments_are_usage_errors_before_the_router_is_asked(argv, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "not running" not in err, (argv, err)


@pytest.mark.parametrize("argv", [("attach", "ip:10.0.0.1/24", "c1"), ("detach", "net:default", "c1"), ("detach", "c1"),
                                  ("expose",), ("hide", "net:10.2.0.0/16"), ("ps", "--format", "json"), ("status",)])
def test_well_formed_requests_reach_for_the_router_and_a_missing_one_is_status_1(argv, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == "" and "weave router is not running" in err and len(err.strip().splitlines()) == 1


ROWS = [{"id": "weave:expose", "name": "weave:expose", "mac": "02:e5:2e:62:03:38", "cidrs": ["10.0.0.254/24"],
         "running": True},
        {"id": "a" * 64, "name": "web", "mac": "66:89:07:3e:81:84", "cidrs": ["10.0.0.1/24", "10.32.0.1/12"],
         "running": True, "hostname": "web.weave.local"},
        {"id": "b" * 64, "name": "gone", "mac": "66:89:07:3e:81:85", "cidrs": ["10.0.0.2/24"], "running": False},
        {"id": "netns:x", "name": "", "mac": "66:89:07:3e:81:86", "cidrs": ["10.0.0.3/24"], "running": True}]


def test_ps_plain_is_weaves_id_mac_cidrs():
    lines = ps_plain(ROWS).splitlines()
    assert lines == ["weave:expose 02:e5:2e:62:03:38 10.0.0.254/24",
                     "aaaaaaaaaaaa 66:89:07:3e:81:84 10.0.0.1/24 10.32.0.1/12",
                     "netns:x 66:89:07:3e:81:86 10.0.0.3/24"]
    # What Weave's own tests grep for: ^CID MAC CIDRS$
    assert re.search(r"^aaaaaaaaaaaa [0-9a-f:]{17} 10\.0\.0\.1/24 10\.32\.0\.1/12$", ps_plain(ROWS), re.M)
    table = ps_lines(ROWS)
    assert "web" in table and "(stopped)" in table and "gone" in table
    assert json.loads(json.dumps(ROWS))  # (the JSON form is the API's rows as they are)
