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


@pytest.mark.parametrize("kw, says", [
    ({"ipalloc_range": "10.32.0.1/12"}, "host bits set"),
    ({"ipalloc_range": "bogus"}, "--ipalloc-range"),
    ({"ipalloc_default_subnet": "10.1.0.0/16"}, "not inside"),
    ({"dns_domain": "bad domain"}, "invalid DNS domain"),
    ({"dns_ttl": -1}, "--dns-ttl"),
    ({"dns_upstream": ["resolver.example"]}, "--dns-upstream"),
])
def test_bad_settings_are_one_line_errors(kw, says):
    with pytest.raises(ValueError, match=says):
        RouterConfig(**kw).validate()
