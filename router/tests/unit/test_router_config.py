import pytest

from weavenet.weaver.config import RouterConfig


def test_defaults_validate_and_public_view_hides_the_password():
    cfg = RouterConfig(password="s3cret")
    cfg.validate()
    pub = cfg.public()
    assert pub["encrypted"] is True and "password_fingerprint" not in pub  # a fast hash is crackable offline
    assert "s3cret" not in repr(pub)
    assert pub["ipalloc_range"] == "10.32.0.0/12" and pub["ipalloc_default_subnet"] == "10.32.0.0/12"
    assert pub["dns_domain"] == "weave.local."
    assert pub["api_port"] == 6784 and pub["max_peers"] == 1000 and pub["dns_upstream"] == []


def test_validate_normalises_in_place():
    cfg = RouterConfig(peers=["192.0.2.1", "192.0.2.1:6783", "h2:7000"], dns_domain="Mesh.Example",
                       name="02:00:00:00:00:0A", dns_upstream=["1.1.1.1", "1.1.1.1"])
    cfg.validate()
    assert cfg.peers == ["192.0.2.1:6783", "h2:7000"] and cfg.dns_domain == "mesh.example."
    assert cfg.name == "02:00:00:00:00:0a" and cfg.dns_upstream == ["1.1.1.1"]


@pytest.mark.parametrize("kw, says", [
    ({"ipalloc_range": "10.32.0.1/12"}, "host bits set"),
    ({"ipalloc_range": "bogus"}, "--ipalloc-range"),
    ({"ipalloc_default_subnet": "10.1.0.0/16"}, "not inside"),
    ({"dns_domain": "bad domain"}, "--dns-domain"),
    ({"dns_ttl": -1}, "--dns-ttl"),
    ({"dns_upstream": ["resolver.example"]}, "--dns-upstream"),
    ({"mtu": 9001}, "invalid --mtu 9001: must be 576-9000"),
    ({"port": 0}, "invalid --port 0: must be 1-65535"),
    ({"max_peers": 1}, "--max-peers"),
    ({"nickname": "a b"}, "--nickname"),
    ({"password": ""}, "empty password"),
    ({"name": "zz"}, "invalid peer name"),
    ({"peers": ["192.0.2.1:0"]}, "port 0 out of range"),
])
def test_bad_settings_are_one_line_errors(kw, says):
    with pytest.raises(ValueError, match=says):
        RouterConfig(**kw).validate()
