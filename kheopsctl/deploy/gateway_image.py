"""Build the gateway image from the bundled kheopsctl package (templates/gateway.Dockerfile).

The build context is assembled in a temp dir: the package source with its templates and realms, a generated
pyproject.toml, the dependency list, and the optional extra CA bundle. The image is labelled with a hash of that
context, so an unchanged package is never rebuilt (a no-change re-run stays fast).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import docker.errors

from kheopsctl.config import Settings
from kheopsctl.site.docker import DockerClient
from kheopsctl.errors import KheopsError
from kheopsctl.resources import package_root, realms_dir, templates_dir

LABEL = "org.kheops.context-hash"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "_data", ".pytest_cache")

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "kheopsctl"
version = "{version}"
requires-python = ">=3.11"
dependencies = {deps}

[project.scripts]
kheopsctl = "kheopsctl.cli:main"

[tool.hatch.build.targets.wheel]
packages = ["kheopsctl"]

[tool.hatch.build.targets.wheel.force-include]
"templates" = "kheopsctl/_data/templates"
"realms" = "kheopsctl/_data/realms"
"""


def runtime_requirements() -> list[str]:
    """The package's own dependencies (no extras), from its installed metadata."""
    reqs = md.requires("kheopsctl") or []
    return sorted(r for r in reqs if "extra ==" not in r)


def assemble_context(settings: Settings, into: Path) -> str:
    """Fill ``into`` with the build context; returns its content hash."""
    src = into / "src"
    shutil.copytree(package_root() / "kheopsctl", src / "kheopsctl", ignore=_SKIP)
    shutil.copytree(templates_dir(), src / "templates", ignore=_SKIP)
    shutil.copytree(realms_dir(), src / "realms", ignore=_SKIP)
    deps = runtime_requirements()
    version = md.version("kheopsctl")
    (src / "pyproject.toml").write_text(PYPROJECT.format(version=version, deps=repr(deps).replace("'", '"')))
    (into / "requirements.txt").write_text("\n".join(["hatchling", *deps]) + "\n")
    shutil.copy(templates_dir() / "gateway.Dockerfile", into / "Dockerfile")
    shutil.copy(templates_dir() / "gateway-entrypoint.sh", into / "gateway-entrypoint.sh")
    extra = into / "extra-ca.pem"
    if settings.gateway.ca_bundle:
        bundle = Path(settings.gateway.ca_bundle).expanduser()
        if not bundle.is_file():
            raise KheopsError(f"gateway.ca_bundle: {bundle} does not exist",
                              hint="give a PEM file of the CA(s) your network's TLS proxy uses", exit_code=2)
        text = bundle.read_text(errors="replace")
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise KheopsError(f"gateway.ca_bundle: {bundle} holds no PEM certificate", exit_code=2)
        extra.write_text(text if text.endswith("\n") else text + "\n")
    else:
        extra.write_text("")
    return _hash_tree(into, settings.images.gateway_base)


def _hash_tree(root: Path, base_image: str) -> str:
    h = hashlib.sha256(base_image.encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:24]


def image_is_current(client: DockerClient, tag: str, context_hash: str) -> bool:
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return (image.labels or {}).get(LABEL) == context_hash


def ensure_gateway_image(client: DockerClient, settings: Settings, on_line: Callable[[str], None] = lambda _l: None) -> bool:
    """Build the gateway image unless an identical one exists. Returns True when it was built."""
    with tempfile.TemporaryDirectory(prefix="kheops-gw-build-") as tmp:
        ctx = Path(tmp)
        context_hash = assemble_context(settings, ctx)
        if image_is_current(client, settings.images.gateway, context_hash):
            return False
        build_image(client, ctx, settings.images.gateway, settings.images.gateway_base, context_hash, on_line,
                    what="the gateway image",
                    hint="behind a TLS-inspecting proxy set gateway.ca_bundle to its CA bundle")
    return True


def build_image(client: DockerClient, ctx: Path, tag: str, base: str, context_hash: str, on_line: Callable[[str], None],
                what: str, hint: str) -> None:
    """docker build (classic builder, like DOCKER_BUILDKIT=0) of ``ctx`` on ``base``, labelled with the hash."""
    _require_base_image(client, base)
    tail: list[str] = []
    try:
        for chunk in client.api.build(path=str(ctx), tag=tag, rm=True, forcerm=True, buildargs={"BASE_IMAGE": base},
                                      labels={LABEL: context_hash}, decode=True, pull=False):
            if "error" in chunk:
                raise KheopsError(f"building {what} failed: {chunk['error'].strip()}",
                                  hint="last build lines:\n" + "".join(tail[-15:]) + hint)
            line = chunk.get("stream", "")
            if line.strip():
                tail.append(line if line.endswith("\n") else line + "\n")
                on_line(_strip_ansi(line.strip()))
    except docker.errors.APIError as exc:
        raise KheopsError(f"building {what} failed: {exc.explanation or exc}", hint=hint) from None


def _require_base_image(client: DockerClient, ref: str) -> None:
    try:
        client.images.get(ref)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        repo, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
        client.images.pull(repo, tag=tag or "latest")
    except docker.errors.APIError as exc:
        raise KheopsError(f"base image {ref} is not available and cannot be pulled ({exc.explanation or exc})",
                          hint="set images.gateway_base to an image present on this host, or allow registry access",
                          exit_code=1) from None


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
