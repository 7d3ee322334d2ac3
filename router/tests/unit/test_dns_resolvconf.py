"""resolv.conf parsing for upstream servers, and the file containers get."""

from weavenet.nameserver import container_resolv_conf, parse_resolv_conf

HOST = """
# generated
nameserver 192.0.2.53
nameserver 192.0.2.53   ; duplicate
nameserver   2001:db8::53
nameserver fe80::1%eth0
nameserver bogus
nameserver
search example.org lab.example.org
options ndots:2
#nameserver 192.0.2.99
"""


def test_nameservers_in_order_without_duplicates_or_garbage():
    assert parse_resolv_conf(HOST) == ["192.0.2.53", "2001:db8::53", "fe80::1%eth0"]


def test_our_own_listen_address_is_excluded():
    assert parse_resolv_conf(HOST, exclude=["192.0.2.53"]) == ["2001:db8::53", "fe80::1%eth0"]
    assert parse_resolv_conf("nameserver 172.17.0.1\n", exclude={"172.17.0.1"}) == []


def test_container_resolv_conf_searches_the_weave_domain_first():
    text = container_resolv_conf("172.17.0.1", "weave.local.", ["example.org", "weave.local"])
    assert text == "nameserver 172.17.0.1\nsearch weave.local example.org\noptions ndots:1\n"
