"""tests/stack/kheops-test.toml differs from production defaults only where the test machines require it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from kheopsctl.config import Settings, load_settings

STACK = Path(__file__).resolve().parent
TEST_CONFIG = STACK / "kheops-test.toml"


def flatten(obj, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_only_image_refs_the_gateway_ca_bundle_and_webhook_networks_differ(tmp_path):
    test = flatten(load_settings(tmp_path, TEST_CONFIG, environ={}).to_dict())
    prod = flatten(load_settings(tmp_path, environ={}).to_dict())  # the defaults for the same directory
    changed = {key for key in prod if test[key] != prod[key]}
    images = {f"images.{f.name}" for f in dataclasses.fields(type(Settings().images))}
    # webhook_allowed_networks: the e2e KHEOPS-client test receives a webhook on this host (a private address)
    assert changed == images | {"gateway.ca_bundle", "gateway.webhook_allowed_networks"}
    assert prod["gateway.webhook_allowed_networks"] == "", "production refuses private destinations by default"
    assert test["gateway.ca_bundle"] == "/etc/ssl/certs/ca-certificates.crt"


def test_every_image_ref_is_built_by_build_images(tmp_path):
    """Each stand-in tag in the test config is one build-images produces (the gateway is built by install)."""
    script = (STACK / "build-images").read_text()
    built = {f"kheops-test/{name}:{tag}" for name, tag in re.findall(r"\]=\$NS/([a-z0-9-]+):([\w.$-]+)", script)}
    built = {ref.replace("$KEYCLOAK_VERSION", "26.4.7") for ref in built}
    images = load_settings(tmp_path, TEST_CONFIG, environ={}).images
    for field in dataclasses.fields(images):
        ref = getattr(images, field.name)
        if field.name == "gateway":
            assert ref.startswith("kheops-test/gateway:")
        else:
            assert ref in built, f"images.{field.name} = {ref} is not built by tests/stack/build-images"
