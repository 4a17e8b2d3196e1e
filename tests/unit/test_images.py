"""The derived images: the gateway build context and the optimized Keycloak tag (no Docker needed)."""

from __future__ import annotations

import pytest

from kheopsctl.config import settings_from_dict
from kheopsctl.deploy.gateway_image import assemble_context
from kheopsctl.deploy.keycloak_image import optimized_keycloak_tag
from kheopsctl.errors import KheopsError

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_gateway_context_is_complete_and_deterministic(tmp_path):
    settings = settings_from_dict({})
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert assemble_context(settings, a) == assemble_context(settings, b)
    for rel in ("Dockerfile", "requirements.txt", "extra-ca.pem", "gateway-entrypoint.sh",
                "src/pyproject.toml", "src/kheopsctl/cli/__init__.py", "src/templates/docker-compose.yml.j2",
                "src/realms/kheops-realm.json.j2"):
        assert (a / rel).is_file(), rel
    assert not list(a.rglob("__pycache__"))
    dockerfile = (a / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE" in dockerfile and "/opt/venv" in dockerfile and "PIP_CERT" in dockerfile
    assert "kheopsctl\", \"gateway\", \"serve\"" in dockerfile or "gateway serve" in dockerfile
    assert "typer" in (a / "requirements.txt").read_text()


def test_ca_bundle_changes_the_context(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text(PEM)
    plain, with_ca = tmp_path / "p", tmp_path / "c"
    plain.mkdir()
    with_ca.mkdir()
    h1 = assemble_context(settings_from_dict({}), plain)
    h2 = assemble_context(settings_from_dict({"gateway": {"ca_bundle": str(bundle)}}), with_ca)
    assert h1 != h2
    assert (with_ca / "extra-ca.pem").read_text() == PEM
    assert (plain / "extra-ca.pem").read_text() == ""


def test_ca_bundle_must_exist_and_be_pem(tmp_path):
    with pytest.raises(KheopsError) as err:
        assemble_context(settings_from_dict({"gateway": {"ca_bundle": str(tmp_path / "none.pem")}}), tmp_path)
    assert err.value.message.startswith("gateway.ca_bundle")
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with pytest.raises(KheopsError):
        assemble_context(settings_from_dict({"gateway": {"ca_bundle": str(junk)}}), ctx)


def test_optimized_keycloak_tag_follows_the_pinned_image():
    a = optimized_keycloak_tag(settings_from_dict({}))
    b = optimized_keycloak_tag(settings_from_dict({"images": {"keycloak": "kheops-test/keycloak:26.4.7"}}))
    assert a.startswith("kheopsctl/keycloak:26.4.7-") and b.startswith("kheopsctl/keycloak:26.4.7-") and a != b
    assert a == optimized_keycloak_tag(settings_from_dict({}))
