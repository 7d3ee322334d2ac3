# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Quoting for systemd EnvironmentFile= values (the router's password, paths)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def weave_systemd_quote(value):
    """A double-quoted value that systemd's EnvironmentFile= parser reads back as exactly `value`.

    Inside double quotes systemd keeps every character as it is (spaces, $, non-ASCII UTF-8), except that
    a backslash escapes the next one. Only " and \\ are escaped: every systemd version unescapes those two,
    while older ones keep the backslash of others such as \\$. JSON quoting (to_json) is not this: its
    \\uXXXX escapes are kept literally, so the service saw another password than the one configured.
    """
    if value is None:
        value = ""
    if not isinstance(value, str):
        value = str(value)
    for bad, what in (("\n", "a newline"), ("\r", "a carriage return"), ("\x00", "a NUL byte")):
        if bad in value:
            # A raw newline would survive the quotes, but a password or path spanning lines is a
            # copy-paste accident far more often than intended; NUL cannot be in an environment at all.
            raise AnsibleFilterError("weave_systemd_quote: the value contains %s, which an EnvironmentFile "
                                     "cannot carry" % what)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # systemd drops a variable whose value is not valid UTF-8: the router would run unencrypted.
        raise AnsibleFilterError("weave_systemd_quote: the value is not valid Unicode text (lone surrogate)")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FilterModule(object):
    def filters(self):
        return {"weave_systemd_quote": weave_systemd_quote}
