# -*- coding: utf-8 -*-
# Copyright: weavenet developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The declared-versus-running comparison: every field, its normalisation and its default."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.weavenet.mesh.plugins.module_utils.weave_container_compare import (
    FIELD_NAMES,
    Context,
    SpecError,
    check_params,
    differences,
    parse_port,
    plan,
    ports_set,
    restart_value,
    string_map,
    volumes_set,
)

IMAGE_ID = "sha256:" + "a" * 64
OTHER_ID = "sha256:" + "b" * 64
IMAGE = {"Id": IMAGE_ID, "Config": {"Cmd": ["/bin/sh"], "Entrypoint": None, "Env": ["PATH=/bin", "FROM_IMAGE=1"],
                                    "Labels": {"vendor": "x"}, "User": "", "WorkingDir": "",
                                    "Volumes": {"/image-vol": {}}}}
WEAVE_DNS = ("172.17.0.1", "weave.local")


def params(**kw):
    p = dict(name="web1", image="busybox", command=None, entrypoint=None, env=None, volumes=None, ports=None,
             hostname=None, user=None, working_dir=None, labels=None, restart_policy=None, restart_retries=None,
             network_mode=None, dns=None, dns_search=None, dns_opts=None, etc_hosts=None, tty=False,
             interactive=False)
    p.update(kw)
    return p


def container(**over):
    """docker inspect of a container weave run made from IMAGE with params() (what Docker records)."""
    info = {
        "Id": "c" * 64, "Image": IMAGE_ID, "State": {"Running": True},
        "Config": {"Hostname": "web1.weave.local", "Domainname": "", "User": "", "Tty": False, "OpenStdin": False,
                   "Env": ["PATH=/bin", "FROM_IMAGE=1"], "Cmd": ["/bin/sh"], "Entrypoint": None, "WorkingDir": "",
                   "Labels": {"vendor": "x"}, "Volumes": {"/image-vol": {}}},
        "HostConfig": {"Binds": None, "PortBindings": {}, "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},
                       "NetworkMode": "default", "Dns": ["172.17.0.1"], "DnsSearch": ["weave.local"],
                       "DnsOptions": None, "ExtraHosts": None},
    }
    for path, value in over.items():
        section, key = path.split("__")
        info[section][key] = value
    return info


def diff_names(info, p, image=None, dns=WEAVE_DNS):
    image = IMAGE if image is None else image
    return [d.field for d in differences(info, Context(p, image, dns))]


def test_a_container_as_declared_has_no_differences():
    assert diff_names(container(), params()) == []


def test_the_table_covers_the_declared_fields():
    assert set(FIELD_NAMES) == {"image", "command", "entrypoint", "env", "labels", "volumes", "ports",
                                "restart_policy", "hostname", "user", "working_dir", "network_mode", "dns",
                                "dns_search", "dns_opts", "etc_hosts", "tty", "interactive"}


# --- image ------------------------------------------------------------------------------------------------
def test_image_compared_by_id_after_resolving_the_tag():
    assert diff_names(container(), params(image="busybox:latest")) == []      # the tag resolves to the same id
    newer = dict(IMAGE, Id=OTHER_ID)
    d = differences(container(), Context(params(), newer, WEAVE_DNS))
    assert [(x.field, x.before, x.after, x.apply) for x in d] == [("image", IMAGE_ID, OTHER_ID, "recreate")]


def test_image_not_on_the_host_is_a_difference_and_image_defaults_are_not_compared():
    d = differences(container(), Context(params(image="busybox:1.37"), None, WEAVE_DNS))
    assert [(x.field, x.after) for x in d] == [("image", "busybox:1.37")]


# --- command and entrypoint -------------------------------------------------------------------------------
@pytest.mark.parametrize("command, differs", [
    (None, False), (["/bin/sh"], False), ("/bin/sh", False), (["httpd", "-f"], True), ("httpd -f", True)])
def test_command_default_is_the_images(command, differs):
    assert (diff_names(container(), params(command=command)) == ["command"]) == differs


def test_declared_command_against_a_list_and_a_string():
    info = container(Config__Cmd=["httpd", "-f", "-p", "80"])
    assert diff_names(info, params(command="httpd -f -p 80")) == []
    assert diff_names(info, params(command=["httpd", "-f", "-p", 80])) == []
    assert diff_names(info, params()) == ["command"]      # undeclared again: back to the image's


def test_entrypoint_drops_the_images_command_like_docker_run():
    info = container(Config__Entrypoint=["/bin/echo"], Config__Cmd=None)
    assert diff_names(info, params(entrypoint="/bin/echo")) == []
    assert diff_names(info, params(entrypoint=["/bin/echo"], command=["hi"])) == ["command"]
    assert diff_names(container(), params(entrypoint=["/bin/echo"])) == ["command", "entrypoint"]


# --- env and labels -----------------------------------------------------------------------------------------
def test_env_from_the_image_is_not_a_difference():
    info = container(Config__Env=["PATH=/bin", "FROM_IMAGE=1", "MODE=a"])
    assert diff_names(info, params(env={"MODE": "a"})) == []
    assert diff_names(info, params(env={"MODE": "b"})) == ["env"]
    assert diff_names(info, params()) == ["env"]                       # a declared variable removed
    assert diff_names(info, params(env={"MODE": "a", "NEW": "1"})) == ["env"]


def test_declared_env_overrides_the_images_value():
    info = container(Config__Env=["PATH=/bin", "FROM_IMAGE=2"])
    assert diff_names(info, params(env={"FROM_IMAGE": "2"})) == []
    assert diff_names(info, params()) == ["env"]


def test_term_docker_adds_for_a_tty_is_not_a_difference():
    info = container(Config__Env=["PATH=/bin", "FROM_IMAGE=1", "TERM=xterm"], Config__Tty=True)
    assert diff_names(info, params(tty=True)) == []
    assert diff_names(info, params(tty=True, env={"TERM": "vt100"})) == ["env"]


def test_env_values_numbers_become_strings_booleans_are_refused():
    assert string_map({"PORT": 8080, "EMPTY": None}, "env") == {"PORT": "8080", "EMPTY": ""}
    with pytest.raises(SpecError, match="env.DEBUG is a boolean"):
        string_map({"DEBUG": True}, "env")
    with pytest.raises(SpecError, match="bad key"):
        string_map({"A=B": "1"}, "env")
    info = container(Config__Env=["PATH=/bin", "FROM_IMAGE=1", "PORT=8080"])
    assert diff_names(info, params(env={"PORT": 8080})) == []


def test_labels_from_the_image_are_not_a_difference():
    info = container(Config__Labels={"vendor": "x", "role": "web"})
    assert diff_names(info, params(labels={"role": "web"})) == []
    assert diff_names(info, params(labels={"role": "db"})) == ["labels"]
    assert diff_names(info, params()) == ["labels"]


# --- volumes and ports ---------------------------------------------------------------------------------------
def test_volumes_normalised():
    assert volumes_set(["/a:/b", "/c:/d:rw", "/e:/f:ro", "name:/g", "/anon"]) == \
        ["/a:/b:", "/c:/d:", "/e:/f:ro", ":/anon:", "name:/g:"]
    info = container(HostConfig__Binds=["/a:/b:rw", "/e:/f:ro"])
    assert diff_names(info, params(volumes=["/a:/b", "/e:/f:ro"])) == []
    assert diff_names(info, params(volumes=["/a:/b"])) == ["volumes"]
    assert diff_names(info, params(volumes=["/a:/b", "/e:/f"])) == ["volumes"]
    assert diff_names(info, params()) == ["volumes"]


def test_anonymous_volumes_compared_but_not_the_images():
    info = container(Config__Volumes={"/image-vol": {}, "/data": {}})
    assert diff_names(info, params(volumes=["/data"])) == []
    assert diff_names(info, params()) == ["volumes"]


@pytest.mark.parametrize("bad", ["", "relative:dir", "/a:/b:ro:x", ":/b"])
def test_bad_volumes_are_refused(bad):
    with pytest.raises(SpecError, match="volumes"):
        volumes_set([bad])


def test_ports_normalised_like_docker_records_them():
    assert parse_port("8080:80") == ("", "8080", "80/tcp")
    assert parse_port("80") == ("", "", "80/tcp")
    assert parse_port("127.0.0.1::53/udp") == ("127.0.0.1", "", "53/udp")
    assert parse_port("0.0.0.0:8443:443") == ("0.0.0.0", "8443", "443/tcp")
    info = container(HostConfig__PortBindings={"80/tcp": [{"HostIp": "", "HostPort": "8080"}],
                                               "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]})
    assert diff_names(info, params(ports=["127.0.0.1::53/udp", "8080:80"])) == []
    assert diff_names(info, params(ports=["8081:80", "127.0.0.1::53/udp"])) == ["ports"]
    assert diff_names(info, params(ports=["8080:80"])) == ["ports"]
    assert diff_names(info, params()) == ["ports"]
    assert diff_names(container(), params(ports=["8080:80"])) == ["ports"]


@pytest.mark.parametrize("bad, says", [
    ("http", "bad entry"), ("80/icmp", "bad protocol"), ("70000:80", "out of range"), ("0", "out of range"),
    ("1.2.3:80:80", "bad address"), ("8000-8010:80", "bad entry")])
def test_bad_ports_are_refused(bad, says):
    with pytest.raises(SpecError, match=says):
        ports_set([bad])


def test_a_container_port_published_twice_is_refused():
    with pytest.raises(SpecError, match="80/tcp is published twice"):
        ports_set(["8080:80", "8081:80"])
    assert ports_set(["8080:80", "8080:80/udp"]) == [":8080:80/tcp", ":8080:80/udp"]


# --- restart policy: updated in place -------------------------------------------------------------------------
def test_restart_policy_is_an_update_not_a_recreate():
    d = differences(container(), Context(params(restart_policy="always"), IMAGE, WEAVE_DNS))
    assert [(x.field, x.before, x.after, x.apply) for x in d] == [("restart_policy", "no", "always", "update")]
    p = plan(container(), Context(params(restart_policy="always"), IMAGE, WEAVE_DNS))
    assert not p.recreate and p.update_args == ["--restart", "always"]
    assert p.diff() == ({"restart_policy": "no"}, {"restart_policy": "always"})


def test_restart_retries():
    info = container(HostConfig__RestartPolicy={"Name": "on-failure", "MaximumRetryCount": 3})
    assert diff_names(info, params(restart_policy="on-failure", restart_retries=3)) == []
    assert diff_names(info, params(restart_policy="on-failure")) == ["restart_policy"]
    assert restart_value(None, None) == "no"
    with pytest.raises(SpecError, match="only for restart_policy on-failure"):
        restart_value("always", 3)


def test_an_update_and_a_recreate_together_recreate():
    p = plan(container(), Context(params(restart_policy="always", env={"A": "1"}), IMAGE, WEAVE_DNS))
    assert p.recreate and p.update_args == []
    assert sorted(p.diff()[1]) == ["env", "restart_policy"]


def test_forced_recreate_without_differences():
    p = plan(container(), Context(params(), IMAGE, WEAVE_DNS), force_recreate=True)
    assert p.recreate and p.diffs == []


# --- what weave run sets: hostname and DNS ----------------------------------------------------------------------
def test_hostname_default_is_weave_runs():
    assert diff_names(container(), params(hostname="web1.weave.local")) == []
    assert diff_names(container(), params(hostname="other")) == ["hostname"]
    info = container(Config__Hostname="web1", Config__Domainname="weave.local")
    assert diff_names(info, params()) == []


def test_without_weavedns_hostname_is_not_compared_and_dns_is_dockers():
    info = container(Config__Hostname="0123456789ab", HostConfig__Dns=None, HostConfig__DnsSearch=None)
    assert diff_names(info, params(), dns=None) == []
    assert diff_names(container(), params(), dns=None) == ["dns", "dns_search"]


def test_dns_declared_and_default():
    info = container(HostConfig__Dns=["9.9.9.9"], HostConfig__DnsSearch=["example.org"],
                     HostConfig__DnsOptions=["ndots:2"])
    assert diff_names(info, params(dns=["9.9.9.9"], dns_search=["example.org"], dns_opts=["ndots:2"])) == []
    assert diff_names(info, params()) == ["dns", "dns_search", "dns_opts"]


def test_network_mode_default_and_shared_namespaces():
    assert diff_names(container(HostConfig__NetworkMode="bridge"), params()) == []
    assert diff_names(container(), params(network_mode="bridge")) == []
    info = container(HostConfig__NetworkMode="host", HostConfig__Dns=None, HostConfig__DnsSearch=None,
                     Config__Hostname="vm1")
    assert diff_names(info, params(network_mode="host")) == []   # weave run sets no DNS there
    assert diff_names(info, params()) == ["hostname", "network_mode", "dns", "dns_search"]


def test_user_working_dir_tty_interactive_etc_hosts():
    assert diff_names(container(), params(user="nobody")) == ["user"]
    assert diff_names(container(Config__User="nobody"), params(user="nobody")) == []
    assert diff_names(container(Config__User="nobody"), params()) == ["user"]
    assert diff_names(container(), params(working_dir="/srv")) == ["working_dir"]
    assert diff_names(container(), params(tty=True)) == ["tty"]
    assert diff_names(container(), params(interactive=True)) == ["interactive"]
    info = container(HostConfig__ExtraHosts=["db:10.0.0.9"])
    assert diff_names(info, params(etc_hosts={"db": "10.0.0.9"})) == []
    assert diff_names(info, params()) == ["etc_hosts"]
    with pytest.raises(SpecError, match="not an IP address"):
        check_params(params(etc_hosts={"db": "nowhere"}))


def test_only_the_changed_field_differs_for_each_field():
    """Changing one declared field of a matching declaration shows exactly that field."""
    base = params(command=["httpd"], env={"A": "1"}, volumes=["/a:/b"], ports=["8080:80"], labels={"l": "1"},
                  restart_policy="always", hostname="h.weave.local", user="u", working_dir="/w",
                  dns=["9.9.9.9"], dns_search=["s"], dns_opts=["ndots:1"], etc_hosts={"x": "10.0.0.1"})
    info = container(Config__Cmd=["httpd"], Config__Env=["PATH=/bin", "FROM_IMAGE=1", "A=1"],
                     Config__Labels={"vendor": "x", "l": "1"}, Config__Hostname="h.weave.local", Config__User="u",
                     Config__WorkingDir="/w", HostConfig__Binds=["/a:/b"],
                     HostConfig__PortBindings={"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                     HostConfig__RestartPolicy={"Name": "always", "MaximumRetryCount": 0}, HostConfig__Dns=["9.9.9.9"],
                     HostConfig__DnsSearch=["s"], HostConfig__DnsOptions=["ndots:1"], HostConfig__ExtraHosts=["x:10.0.0.1"])
    assert diff_names(info, base) == []
    changes = dict(command=["sh"], env={"A": "2"}, volumes=["/a:/c"], ports=["8081:80"], labels={"l": "2"},
                   restart_policy="no", hostname="g", user="v", working_dir="/v", dns=["1.1.1.1"], dns_search=["t"],
                   dns_opts=["ndots:2"], etc_hosts={"x": "10.0.0.2"}, tty=True, interactive=True,
                   network_mode="none", entrypoint=["/bin/sh"])
    for key, value in changes.items():
        p = copy.deepcopy(base)
        p[key] = value
        got = diff_names(info, p)
        assert got == [key], (key, got)


def test_check_params_names_the_option():
    for kw, says in ((dict(command=3), "command must be"), (dict(entrypoint={"a": 1}), "entrypoint must be"),
                     (dict(ports=["x"]), "ports"), (dict(labels={"a": False}), "labels.a is a boolean"),
                     (dict(command="'unclosed"), "command:")):
        with pytest.raises(SpecError, match=says):
            check_params(params(**kw))
