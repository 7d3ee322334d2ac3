# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""weave_systemd_quote and the router's environment file, read back the way systemd reads EnvironmentFile=."""

from __future__ import annotations

import json
import os
import random

import jinja2
import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.weavenet.mesh.plugins.filter.systemd import weave_systemd_quote

TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "router", "templates",
                        "weave.env.j2")

WHITESPACE, NEWLINE, COMMENTS = " \t\n\r", "\n\r", "#;"
SHELL_NEED_ESCAPE = '"\\`$'


def systemd_env_file(text):
    """{key: value} as systemd's parse_env_file_internal() (src/basic/env-file.c, v254+) reads `text`.

    A state machine over characters: unquoted values lose trailing whitespace and take backslash escapes;
    single quotes are literal; inside double quotes a backslash before one of " \\ ` $ yields that character,
    before a newline nothing (continuation), before anything else itself plus the character."""
    env = {}
    state, key, value = "PRE_KEY", [], []
    key_ws = value_ws = None   # where trailing whitespace of the key / unquoted value starts

    def push():
        k = "".join(key[:key_ws] if key_ws is not None else key)
        env[k] = "".join(value)

    for c in text:
        if state == "PRE_KEY":
            if c in COMMENTS:
                state = "COMMENT"
            elif c not in WHITESPACE:
                state, key, key_ws = "KEY", [c], None
        elif state == "KEY":
            if c in NEWLINE:
                state, key = "PRE_KEY", []
            elif c == "=":
                state, value, value_ws = "PRE_VALUE", [], None
            else:
                if c not in WHITESPACE:
                    key_ws = None
                elif key_ws is None:
                    key_ws = len(key)
                key.append(c)
        elif state == "PRE_VALUE":
            if c in NEWLINE:
                push()
                state, key, value = "PRE_KEY", [], []
            elif c == "'":
                state = "SINGLE"
            elif c == '"':
                state = "DOUBLE"
            elif c == "\\":
                state = "VALUE_ESCAPE"
            elif c not in WHITESPACE:
                state = "VALUE"
                value.append(c)
        elif state == "VALUE":
            if c in NEWLINE:
                if value_ws is not None:
                    del value[value_ws:]
                push()
                state, key, value = "PRE_KEY", [], []
            elif c == "\\":
                state, value_ws = "VALUE_ESCAPE", None
            else:
                if c not in WHITESPACE:
                    value_ws = None
                elif value_ws is None:
                    value_ws = len(value)
                value.append(c)
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            if c not in NEWLINE:
                value.append(c)
        elif state == "SINGLE":
            if c == "'":
                state = "PRE_VALUE"
            else:
                value.append(c)
        elif state == "DOUBLE":
            if c == '"':
                state = "PRE_VALUE"
            elif c == "\\":
                state = "DOUBLE_ESCAPE"
            else:
                value.append(c)
        elif state == "DOUBLE_ESCAPE":
            state = "DOUBLE"
            if c in SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != "\n":
                value.extend(("\\", c))
        elif state == "COMMENT":
            if c == "\\":
                state = "COMMENT_ESCAPE"
            elif c in NEWLINE:
                state = "PRE_KEY"
        elif state == "COMMENT_ESCAPE":
            state = "PRE_KEY" if c in NEWLINE else "COMMENT"
    if state in ("PRE_VALUE", "VALUE", "VALUE_ESCAPE", "SINGLE", "DOUBLE", "DOUBLE_ESCAPE"):
        if state == "VALUE" and value_ws is not None:
            del value[value_ws:]
        push()
    return env


def test_the_parser_follows_systemd():
    """Known readings of systemd's parser, so the round trips below test against the real rule."""
    text = ('A=plain value  \nB="x\\"y\\\\z\\$\\`"\nC="\\n\\u00e4"\nD=\'a\\b "c"\'\n# E=no\n F = spaced\n'
            'G="one\\\ntwo"\nH=a\\ b\\\nc\n')
    assert systemd_env_file(text) == {"A": "plain value", "B": 'x"y\\z$`', "C": "\\n\\u00e4", "D": 'a\\b "c"',
                                      "F": "spaced", "G": "onetwo", "H": "a bc"}


PASSWORDS = [
    "pässwörd ✓ 日本語 🔐",                                    # non-ASCII: to_json wrote \u00e4...
    '"\'"\'\\"\\\\"" \' ""',                                     # quotes and backslashes everywhere
    "$HOME ${PATH} $(id) `id` \\$ \\` %h %%",                  # no expansion, no specifiers
    "  leading and trailing spaces\t ",
    "ends with a backslash\\",
    "#not a comment ;nor this",
    "a=b=c",
    "",
]


@pytest.mark.parametrize("password", PASSWORDS)
def test_password_round_trips_through_systemd(password):
    line = "WEAVE_PASSWORD=%s\n" % weave_systemd_quote(password)
    assert systemd_env_file(line) == {"WEAVE_PASSWORD": password}


def test_random_printable_passwords_round_trip():
    rng = random.Random(10)
    pool = [chr(c) for c in range(0x20, 0x7F)] + list("\t äöü߀✓日本🔐\u00a0\u2028")
    for _ in range(2000):
        pw = "".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))
        assert systemd_env_file("X=%s\n" % weave_systemd_quote(pw)) == {"X": pw}, pw


def test_to_json_did_not_round_trip():
    """The bug this filter fixes: systemd keeps JSON's \\u escapes, so the router got another password."""
    password = "pässwörd"
    assert systemd_env_file("WEAVE_PASSWORD=%s\n" % json.dumps(password))["WEAVE_PASSWORD"] != password


@pytest.mark.parametrize("bad", ["line1\nline2", "cr\r", "nul\x00", "lone \ud800 surrogate"])
def test_values_an_environment_file_cannot_carry_are_refused(bad):
    with pytest.raises(AnsibleFilterError, match="weave_systemd_quote"):
        weave_systemd_quote(bad)


def test_non_strings_are_text():
    assert weave_systemd_quote(12345) == '"12345"' and weave_systemd_quote(None) == '""'


@pytest.mark.parametrize("password", [PASSWORDS[0], PASSWORDS[1], PASSWORDS[2]])
def test_the_role_template_writes_the_password_and_paths_systemd_reads(password):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["weavenet.mesh.weave_systemd_quote"] = weave_systemd_quote
    env.filters["bool"] = bool
    with open(TEMPLATE) as f:
        tpl = env.from_string(f.read())
    text = tpl.render(ansible_managed="Ansible managed", weave_systemd_unit="weave.service",
                      weave_rundir="/run/weave dir", weave_datadir="/var/lib/wé\"ave", weave_password=password,
                      weave_nickname="h1", weave_port=6783, weave_conn_limit=100, weave_mtu=1376,
                      weave_discovery=True, weave_fastdp=True, weave_ipalloc_range="", weave_ipalloc_default_subnet="",
                      weave_dns=None, weave_dns_domain="", weave_dns_ttl=None, _weave_peers=["192.0.2.1"])
    got = systemd_env_file(text)
    assert got["WEAVE_PASSWORD"] == password
    assert got["WEAVE_RUNDIR"] == "/run/weave dir" and got["WEAVE_DATADIR"] == "/var/lib/wé\"ave"
    assert got["WEAVE_LAUNCH_ARGS"] == "--nickname h1 --port 6783 --conn-limit 100 --mtu 1376 192.0.2.1"
