"""An optimized Keycloak image: the pinned image with ``kc.sh build`` already run for our build options.

Keycloak's plain ``start`` re-runs its build step (Quarkus augmentation) on every container start, which costs a
minute of CPU on small hosts. Building once, as Keycloak's own production guide recommends, lets every start
use ``start --optimized``. The derived tag depends only on the pinned reference and the build options, so it is
known without Docker (--no-start); the image's label records the base image id, so a re-pulled base is rebuilt.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Callable

import docker.errors

from kheopsctl.config import Settings
from kheopsctl.site.docker import DockerClient
from kheopsctl.deploy.gateway_image import LABEL, build_image
from kheopsctl.resources import templates_dir

# build-time options; everything else (hostname, proxy headers, credentials) stays a runtime option
BUILD_OPTIONS = {"KC_DB": "postgres", "KC_HEALTH_ENABLED": "true"}


def _options_hash(base_ref: str) -> str:
    text = base_ref + "\0" + "\0".join(f"{k}={v}" for k, v in sorted(BUILD_OPTIONS.items()))
    text += "\0" + (templates_dir() / "keycloak.Dockerfile").read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def optimized_keycloak_tag(settings: Settings) -> str:
    base = settings.images.keycloak
    version = base.rsplit(":", 1)[1] if ":" in base.rsplit("/", 1)[-1] else "latest"
    version = version.split("@")[0]
    return f"kheopsctl/keycloak:{version}-{_options_hash(base)}"


def ensure_keycloak_image(client: DockerClient, settings: Settings, on_line: Callable[[str], None] = lambda _l: None) -> bool:
    tag = optimized_keycloak_tag(settings)
    base_id = None
    try:
        base_id = client.images.get(settings.images.keycloak).id
    except docker.errors.ImageNotFound:
        pass  # build_image pulls it (or explains why it cannot)
    stamp = f"{_options_hash(settings.images.keycloak)}:{base_id}"
    try:
        if (client.images.get(tag).labels or {}).get(LABEL) == stamp:
            return False
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="kheops-kc-build-") as tmp:
        ctx = Path(tmp)
        (ctx / "Dockerfile").write_text((templates_dir() / "keycloak.Dockerfile").read_text())
        if base_id is None:  # pulled during the build: stamp it afterwards on the next run
            stamp = f"{_options_hash(settings.images.keycloak)}:pending"
        build_image(client, ctx, tag, settings.images.keycloak, stamp, on_line, what="the Keycloak image",
                    hint="see the lines above")
    return True
