"""Settings precedence (flags > environment > file > defaults) and error paths, as install sees them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kheopsctl.config import load_settings
from kheopsctl.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_any_source(tmp_path):
    s = load_settings(tmp_path, environ={})
    assert s.root_url == "http://127.0.0.1"
    assert s.ports.http == 80 and s.ports.keycloak == 8080
    assert s.pacs.kind == "orthanc"
    assert s.issuer == "http://127.0.0.1:8080/realms/kheops"


def test_file_then_env_then_flags(tmp_path):
    write(tmp_path / "kheops.toml", '[ports]\nhttp = 8001\nkeycloak = 8002\n[site]\nroot_url = "http://a.example"\n')
    s = load_settings(tmp_path, environ={})
    assert (s.ports.http, s.ports.keycloak, s.root_url) == (8001, 8002, "http://a.example")

    env = {"KHEOPS_PORTS__HTTP": "9001", "KHEOPS_ROOT_URL": "http://b.example"}
    s = load_settings(tmp_path, environ=env)
    assert (s.ports.http, s.ports.keycloak, s.root_url) == (9001, 8002, "http://b.example")

    s = load_settings(tmp_path, environ=env, flags={"site.root_url": "http://c.example", "ports.http": None})
    assert (s.ports.http, s.root_url) == (9001, "http://c.example")
    assert s.issuer == "http://c.example:8002/realms/kheops"


def test_config_flag_is_layered_over_the_site_file(tmp_path):
    write(tmp_path / "kheops.toml", "[ports]\nhttp = 8001\nkeycloak = 8002\n")
    other = write(tmp_path / "other.toml", "[ports]\nkeycloak = 8003\n")
    s = load_settings(tmp_path, config_file=other, environ={})
    assert s.ports.http == 8001 and s.ports.keycloak == 8003
    s = load_settings(tmp_path, config_file=other, environ={"KHEOPS_PORTS__KEYCLOAK": "8004"})
    assert s.ports.keycloak == 8004


def test_config_flag_keeps_a_secured_site_secured(tmp_path):
    """``secure`` records the mode in DIR/kheops.toml; an install re-run with --config must not drop it."""
    write(tmp_path / "kheops.toml", "[site]\nroot_url = 'https://pacs.example.org'\nmode = 'custom'\n")
    other = write(tmp_path / "images.toml", "[images]\nnginx = 'registry.local/nginx:1.22'\n")
    s = load_settings(tmp_path, config_file=other, environ={})
    assert s.secured and s.site.mode == "custom" and s.root_url == "https://pacs.example.org"
    assert s.images.nginx == "registry.local/nginx:1.22"


def test_webhook_networks_are_checked(tmp_path):
    s = load_settings(tmp_path, environ={"KHEOPS_GATEWAY__WEBHOOK_ALLOWED_NETWORKS": "10.20.0.0/16, 192.168.5.10"})
    assert s.gateway.webhook_allowed_networks == "10.20.0.0/16, 192.168.5.10"
    with pytest.raises(ConfigError, match=r"^gateway.webhook_allowed_networks: 'intranet'"):
        load_settings(tmp_path, environ={"KHEOPS_GATEWAY__WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8,intranet"})


def test_images_are_settings(tmp_path):
    s = load_settings(tmp_path, environ={"KHEOPS_IMAGES__NGINX": "registry.local/nginx:1.22"})
    assert s.images.nginx == "registry.local/nginx:1.22"


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ("[ports]\nhtp = 81\n", {}, "ports.htp"),  # typo
        ("[port]\nhttp = 81\n", {}, "port"),
        ("[ports]\nhttp = 'eighty'\n", {}, "ports.http"),
        ("[ports]\nhttp = 70000\n", {}, "ports.http"),
        ("", {"KHEOPS_PORTS__HTTP": "x"}, "ports.http"),
        ("[site]\nroot_url = 'ftp://x'\n", {}, "site.root_url"),
        ("[site]\nroot_url = 'http://x/kheops'\n", {}, "site.root_url"),
        ("[pacs]\nkind = 'dicomweb'\n", {}, "pacs.url"),
        ("[pacs]\nkind = 'pacsman'\n", {}, "pacs.kind"),
        ("[images]\nnginx = 'Not An Image'\n", {}, "images.nginx"),
        ("[ports]\nhttp = 8080\n", {}, "ports"),  # same as keycloak
    ],
)
def test_invalid_values_name_their_key(tmp_path, toml, env, key):
    write(tmp_path / "kheops.toml", toml)
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path, environ=env)
    assert err.value.message.startswith(key), err.value.message
    assert err.value.exit_code == 2


def test_env_error_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path, environ={"KHEOPS_PORTS__KEYCLOAK": "abc"})
    assert "KHEOPS_PORTS__KEYCLOAK" in err.value.message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path, config_file=tmp_path / "nope.toml", environ={})
    assert "nope.toml" in err.value.message and err.value.hint
