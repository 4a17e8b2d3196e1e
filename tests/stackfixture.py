"""Shared pytest plugin: one real KHEOPS stack per test session, installed with ``kheopsctl install``.

``installed_stack`` runs ``kheopsctl install --dir <tmp> --config tests/stack/kheops-test.toml --yes`` once and
tears the stack down (volumes included) at the end of the session, unless ``KHEOPS_KEEP_STACK=1``.

Engineers running stacks side by side pick their own compose project and ports through the environment, which
kheopsctl honours like any user setting: ``KHEOPS_PROJECT``, ``KHEOPS_PORTS__HTTP``, ``KHEOPS_PORTS__HTTPS``,
``KHEOPS_PORTS__KEYCLOAK`` (the root URL follows ``KHEOPS_PORTS__HTTP`` unless ``KHEOPS_ROOT_URL`` is set).
``KHEOPS_STACK_DIR`` reuses a fixed site directory (handy with KHEOPS_KEEP_STACK=1).
A missing Docker engine or missing test images makes these tests fail loudly: they never skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kheopsctl.config import load_settings
from kheopsctl.site import SiteLayout
from kheopsctl.site.secrets import Secret, read_secret

REPO = Path(__file__).resolve().parent.parent
TEST_CONFIG = REPO / "tests" / "stack" / "kheops-test.toml"
DOCKER = "/usr/bin/docker"
# the console script of the interpreter running the tests (pip install -e .)
KHEOPSCTL = str(Path(sys.executable).parent / "kheopsctl")


@dataclass
class Stack:
    dir: Path
    config: Path = TEST_CONFIG
    env: dict[str, str] = field(default_factory=dict)

    @property
    def layout(self) -> SiteLayout:
        return SiteLayout(self.dir)

    @property
    def settings(self):
        """Settings as the site sees them now (DIR/kheops.toml + the same environment overrides)."""
        return load_settings(self.dir, environ=self.env)

    def run(self, *args: str, check: bool = False, input: str | None = None, timeout: float = 900,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``kheopsctl ARGS --dir <stack dir>`` in a subprocess (``--dir`` added unless given)."""
        argv = [KHEOPSCTL, *args]
        if "--dir" not in args and args and args[0] not in ("gateway", "--help"):
            argv += ["--dir", str(self.dir)]
        full_env = {**self.env, **(env or {})}
        return subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout,
                              env=full_env, check=check, cwd=REPO)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ports.http}"

    @property
    def keycloak_url(self) -> str:
        return self.settings.keycloak_public_url

    @property
    def admin_password(self) -> str:
        return read_secret(self.layout, Secret.ADMIN_PASSWORD)

    def secret(self, name: str) -> str:
        return read_secret(self.layout, name)

    def install(self, *extra: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        return self.run("install", "--config", str(self.config), "--yes", *extra, timeout=timeout)

    def down(self, purge: bool = True) -> subprocess.CompletedProcess:
        return self.run("down", *(["--purge-data", "--yes"] if purge else []), timeout=300)


def stack_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    env.setdefault("DOCKER_BUILDKIT", "0")
    # a stack moved to another HTTP port is served there: keep the root URL (and the realm's redirects) in step
    http = env.get("KHEOPS_PORTS__HTTP")
    if http and http != "80" and "KHEOPS_ROOT_URL" not in overrides and "KHEOPS_ROOT_URL" not in os.environ:
        env["KHEOPS_ROOT_URL"] = f"http://127.0.0.1:{http}"
    return env


def require_stack_prerequisites() -> None:
    """Fail (not skip) with a useful message when the engine or the test images are missing."""
    if not TEST_CONFIG.is_file():
        pytest.fail(f"{TEST_CONFIG} is missing (it names the locally built test images)", pytrace=False)
    probe = subprocess.run([DOCKER, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"Docker engine unreachable: {probe.stderr.strip()} (start dockerd)", pytrace=False)
    images = subprocess.run([DOCKER, "images", "--format", "{{.Repository}}:{{.Tag}}", "kheops-test/*"],
                            capture_output=True, text=True).stdout.split()
    if not images:
        pytest.fail("no kheops-test/* images: run tests/stack/build-images first", pytrace=False)


def describe_failure(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stderr ---\n{result.stderr[-6000:]}\n--- stdout ---\n{result.stdout[-2000:]}"


@pytest.fixture(scope="session")
def installed_stack(tmp_path_factory) -> Stack:
    require_stack_prerequisites()
    fixed = os.environ.get("KHEOPS_STACK_DIR")
    site = Path(fixed) if fixed else tmp_path_factory.mktemp("site") / "kheops"
    stack = Stack(dir=site, env=stack_env())
    result = stack.install()
    if result.returncode != 0:
        pytest.fail("kheopsctl install of the shared test stack failed: " + describe_failure(result), pytrace=False)
    yield stack
    if os.environ.get("KHEOPS_KEEP_STACK") != "1":
        stack.down(purge=True)
