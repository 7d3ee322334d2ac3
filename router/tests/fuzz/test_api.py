"""The local API's edge under random bodies and headers: the real app on 127.0.0.1, a stub router.

Invariants: a body of any JSON shape is a 200 or a one-line 400 (never a 500 or a dropped connection);
a request with a wrong Host, an Origin or a wrong token never reaches the router.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ..unit.test_api_auth import AUTH, JSON, StubRouter, raw, served

FIELDS = ["peers", "replace", "target", "cidrs", "peer", "ips", "fqdn", "password"]
POSTS = ["/connect", "/forget", "/attach", "/detach", "/expose", "/hide", "/rmpeer", "/dns-add", "/dns-remove",
         "/password/check"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8),
                                                                inner, max_size=4),
    max_leaves=12)
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4) | json_values


@pytest.fixture(scope="module")
def server():
    router = StubRouter()
    with served(router) as port:
        yield port, router


@given(path=st.sampled_from(POSTS), body=bodies)
def test_any_json_body_is_200_or_one_line_400(server, path, body):
    port, _ = server
    status, answer = raw(port, "POST", path, json.dumps(body).encode(), dict(AUTH, **JSON))
    assert status in (200, 400), (status, answer)
    if status == 400:
        assert isinstance(answer.get("error"), str) and "\n" not in answer["error"]


header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=30)


@given(path=st.sampled_from(["/report", "/connect", "/attach", "/metrics"]), host=header_text,
       auth=st.one_of(st.none(), header_text.map(lambda t: "Bearer " + t)), origin=st.one_of(st.none(), header_text))
def test_foreign_host_origin_or_token_never_reaches_the_router(server, path, host, auth, origin):
    port, router = server
    before = len(router.calls)
    headers = dict(JSON)
    if auth is not None:
        headers["Authorization"] = auth
    if origin is not None:
        headers["Origin"] = origin
    method = "GET" if path in ("/report", "/metrics") else "POST"
    body = None if method == "GET" else b'{"peers": ["a"], "target": "pid:1"}'
    status, _ = raw(port, method, path, body, headers, host=host or "x")
    assert status in (400, 401, 403, 404) or (path == "/metrics" and status == 200 and origin is None)
    assert len(router.calls) == before
