"""The install pipeline: settings -> render (in memory) -> pre-flight -> write -> build -> up -> realm.

Every check that can fail on user input runs before the first byte is written, so a bad value, an
unreachable engine or a busy port leaves DIR as it was. Each later step is idempotent, which makes a re-run
the way to finish an interrupted install.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console

from kheopsctl.config import CONFIG_FILE, Settings, load_settings
from kheopsctl.deploy import secrets
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.deploy.render import render_site
from kheopsctl.deploy.sitefile import write_sitefile
from kheopsctl.errors import ConfigError, KheopsError

ADMIN_PASSWORD_ENV = "KHEOPS_ADMIN_PASSWORD"
MIN_PASSWORD = 12


@dataclass
class InstallOptions:
    dir: Path
    config: Path | None = None
    root_url: str | None = None
    start: bool = True
    yes: bool = False
    admin_password_file: Path | None = None


@dataclass
class InstallResult:
    settings: Settings
    layout: SiteLayout
    created_secrets: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)
    started: bool = False
    built_gateway_image: bool = False
    recreated: list[str] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)
    realm_changes: list[str] = field(default_factory=list)
    generated_admin_password: str | None = None
    seconds: float = 0.0
    # seconds per step, for the benchmark and for users wondering where the time went
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        s = self.settings
        return {
            "dir": str(self.layout.dir),
            "project": s.project,
            "root_url": s.root_url,
            "keycloak_url": s.keycloak_public_url,
            "issuer": s.issuer,
            "admin_user": s.keycloak.admin_user,
            "admin_password_file": str(self.layout.secret(secrets.ADMIN_PASSWORD)),
            "created_secrets": self.created_secrets,
            "changed_files": self.changed_files,
            "started": self.started,
            "built_gateway_image": self.built_gateway_image,
            "recreated": self.recreated,
            "services": self.services,
            "realm_changes": self.realm_changes,
            "seconds": round(self.seconds, 2),
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def resolve_settings(opts: InstallOptions) -> Settings:
    flags = {"site.root_url": opts.root_url}
    try:
        return load_settings(opts.dir, config_file=opts.config, flags=flags)
    except ConfigError as exc:
        if not exc.hint:  # every error gets a way out: say where settings come from
            source = opts.config or (opts.dir / CONFIG_FILE)
            exc.hint = (f"fix the value in {source}, in its KHEOPS_<SECTION>__<KEY> environment variable, "
                        f"or in the command-line flag; see docs/install.md for the valid values")
        raise


def admin_password(opts: InstallOptions, layout: SiteLayout, prompt: Callable[[], str] | None) -> tuple[str | None, bool]:
    """The admin password to store, and whether it was generated. (None, False) when one is stored already."""
    if layout.secret(secrets.ADMIN_PASSWORD).exists():
        # never overwritten, even when one is given: Keycloak was bootstrapped with the stored one
        return None, False
    if opts.admin_password_file:
        try:
            value = opts.admin_password_file.read_text().strip()
        except OSError as exc:
            raise KheopsError(f"--admin-password-file: cannot read {opts.admin_password_file} ({exc.strerror})",
                              hint="give a readable file holding the password on its first line", exit_code=2) from None
        return _check_password(value, "--admin-password-file"), False
    if os.environ.get(ADMIN_PASSWORD_ENV):
        return _check_password(os.environ[ADMIN_PASSWORD_ENV].strip(), f"${ADMIN_PASSWORD_ENV}"), False
    if prompt is not None and not opts.yes and sys.stdin.isatty():
        value = prompt()
        if value:
            return _check_password(value, "the admin password"), False
    return secrets.generate(), True


def _check_password(value: str, where: str) -> str:
    if len(value) < MIN_PASSWORD or "\n" in value:
        raise KheopsError(f"{where}: the Keycloak admin password must be one line of at least {MIN_PASSWORD} characters",
                          hint="leave it out to have a strong one generated", exit_code=2)
    return value


def run_install(opts: InstallOptions, console: Console, prompt: Callable[[], str] | None = None) -> InstallResult:
    started = time.monotonic()
    settings = resolve_settings(opts)
    layout = SiteLayout(opts.dir)
    _check_site_dir(layout)
    site = render_site(settings, layout)  # in memory: template or value problems stop here
    password, generated = admin_password(opts, layout, prompt)

    timings: dict[str, float] = {}
    client = None
    if opts.start:
        from kheopsctl.deploy.compose import compose_command, docker_client

        with _timed(timings, "preflight"):
            client = docker_client()
            compose_command()
            _preflight(settings, layout, console)
            _check_data_has_secrets(client, settings, layout)

    result = InstallResult(settings=settings, layout=layout, timings=timings)
    with _timed(timings, "write"):
        secrets.ensure_secrets_dir(layout)
        result.created_secrets = secrets.ensure_all(layout, password)
        if generated and secrets.ADMIN_PASSWORD in result.created_secrets:
            result.generated_admin_password = password
        changed = [layout.config] if write_sitefile(layout, settings) else []
        changed += site.write()
        result.changed_files = [str(p.relative_to(layout.dir)) for p in changed]

    if opts.start:
        from kheopsctl.deploy.gateway_image import ensure_gateway_image
        from kheopsctl.deploy.keycloak_image import ensure_keycloak_image
        from kheopsctl.deploy.provision import bring_up
        from kheopsctl.deploy.realm_sync import reconcile

        with _timed(timings, "images"), console.status("gateway image: checking") as status:
            result.built_gateway_image = ensure_gateway_image(
                client, settings, on_line=lambda line: status.update(f"gateway image: {line[:100]}"))
            status.update("Keycloak image: checking")
            ensure_keycloak_image(client, settings,
                                  on_line=lambda line: status.update(f"Keycloak image: {line[:100]}"))
        if settings.secured:  # nginx needs a certificate on 443 even if the certs volume was purged
            from kheopsctl.secure.material import ensure_tls_material

            ensure_tls_material(client, settings, layout)
        with _timed(timings, "bring_up"):
            up = bring_up(client, settings, layout, console)
        result.services, result.recreated = up.services, up.recreated
        with _timed(timings, "realm"), console.status("Keycloak realm: reconciling"):
            result.realm_changes = reconcile(settings, layout, client)
        result.started = True
    result.seconds = time.monotonic() - started
    return result


@contextlib.contextmanager
def _timed(timings: dict[str, float], step: str):
    t0 = time.monotonic()
    try:
        yield
    finally:
        timings[step] = time.monotonic() - t0


def _check_site_dir(layout: SiteLayout) -> None:
    if layout.dir.exists() and not layout.dir.is_dir():
        raise KheopsError(f"--dir: {layout.dir} exists and is not a directory", hint="choose another --dir", exit_code=2)
    probe = layout.dir if layout.dir.exists() else next(p for p in layout.dir.parents if p.exists())
    if not os.access(probe, os.W_OK):
        raise KheopsError(f"--dir: {probe} is not writable", hint="choose a directory you own, or fix its permissions")


def _check_data_has_secrets(client, settings: Settings, layout: SiteLayout) -> None:
    """Refuse to pair freshly generated secrets with an existing database volume.

    New passwords against an old PostgreSQL data directory lock every service out: the data is intact but
    unreachable, and the containers restart in a loop. This happens when a site is installed into a new DIR
    (or its secrets/ was deleted) while the project's volumes survive.
    """
    if layout.secret("postgres_password").exists():
        return
    name = f"{settings.project}_pgdata"
    try:
        client.volumes.get(name)
    except Exception:  # docker.errors.NotFound, or an engine that cannot tell: nothing to protect
        return
    raise KheopsError(
        f"volume {name} holds a database from an earlier install, but {layout.secrets_dir} has no secrets for it",
        hint="install with --dir pointing at the original site directory (its secrets/ unlocks the data), set "
             f"another project name, or, to discard that data for good: docker volume rm {name}",
    )


def _preflight(settings: Settings, layout: SiteLayout, console: Console) -> None:
    from kheopsctl.doctor import run_preflight

    with console.status("pre-flight checks"):
        results = run_preflight(settings, layout)
    for r in results:
        if r.status == "warn":
            console.print(f"[yellow]warning:[/] {r.message}", highlight=False)
    failed = [r for r in results if r.status in ("fail", "error")]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more: {', '.join(r.name for r in failed[1:])})" if len(failed) > 1 else ""
        raise KheopsError(f"pre-flight {first.name}: {first.message}{more}",
                          hint=first.hint or "run kheopsctl doctor --preflight for details")
