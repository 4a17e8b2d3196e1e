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

from kheopsctl.config import Settings
from kheopsctl.deploy import checks, realm_sync
from kheopsctl.deploy.converge import converge
from kheopsctl.deploy.render import render_site
from kheopsctl.deploy.sitefile import write_sitefile
from kheopsctl.doctor import run_preflight
from kheopsctl.errors import DockerUnavailable, KheopsError
from kheopsctl.site import Secret, Site, SiteLayout, labels, secrets
from kheopsctl.site.fsutil import remove_stray_temps, write_atomic
from kheopsctl.site.docker import compose_command, volume_labels

ADMIN_PASSWORD_ENV = "KHEOPS_ADMIN_PASSWORD"
# DIR/.kheopsctl/NAME exists while a generated admin password has not been shown yet
UNSHOWN_PASSWORD = "admin-password-not-shown"
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


def open_for_install(opts: InstallOptions) -> Site:
    """The site in opts.dir, which may not be a site yet."""
    _check_site_dir(SiteLayout(opts.dir))
    return Site.open(opts.dir, config=opts.config, flags={"site.root_url": opts.root_url}, must_exist=False)


def resolve_settings(opts: InstallOptions) -> Settings:
    return open_for_install(opts).settings


def admin_password(opts: InstallOptions, layout: SiteLayout, prompt: Callable[[], str] | None) -> tuple[str | None, bool]:
    """The admin password to store, and whether it was generated. (None, False) when one is stored already."""
    stored = layout.secret(secrets.ADMIN_PASSWORD)
    given = _read_password_file(opts.admin_password_file) if opts.admin_password_file else None
    if stored.exists():
        # never overwritten, even when one is given: Keycloak was bootstrapped with the stored one
        if given is not None and given != secrets.read_secret(layout, secrets.ADMIN_PASSWORD):
            raise KheopsError(f"--admin-password-file: this site has its admin password already ({stored}); "
                              "it is never overwritten",
                              hint="leave the flag out; to change the password, change it in Keycloak's admin "
                                   "console, then write the new one to that file", exit_code=2)
        return None, False
    if given is not None:
        return _check_password(given, "--admin-password-file"), False
    if os.environ.get(ADMIN_PASSWORD_ENV):
        return _check_password(os.environ[ADMIN_PASSWORD_ENV].strip(), f"${ADMIN_PASSWORD_ENV}"), False
    if prompt is not None and not opts.yes and sys.stdin.isatty():
        value = prompt()
        if value:
            return _check_password(value, "the admin password"), False
    return secrets.generate(), True


def _read_password_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KheopsError(f"--admin-password-file: cannot read {path} ({exc.strerror})",
                          hint="give a readable file holding the password on its first line", exit_code=2) from None
    except UnicodeDecodeError:
        raise KheopsError(f"--admin-password-file: {path} is not UTF-8 text",
                          hint=f"save it as UTF-8, e.g. iconv -f UTF-16 -t UTF-8 {path} > pw.txt", exit_code=2) from None


def _check_password(value: str, where: str) -> str:
    if len(value) < MIN_PASSWORD or "\n" in value:
        raise KheopsError(f"{where}: the Keycloak admin password must be one line of at least {MIN_PASSWORD} characters",
                          hint="leave it out to have a strong one generated", exit_code=2)
    return value


def run_install(opts: InstallOptions, console: Console, prompt: Callable[[], str] | None = None) -> InstallResult:
    started = time.monotonic()
    site = open_for_install(opts)
    settings, layout = site.settings, site.layout
    checks.check_settings_agree(settings)
    checks.check_files(settings)
    checks.check_no_foreign_files(layout)
    rendered = render_site(settings, layout, site_id=site.site_id)  # in memory: template or value problems stop here
    password, generated = admin_password(opts, layout, prompt)

    timings: dict[str, float] = {}
    if opts.start:
        with _timed(timings, "preflight"):
            try:  # an unreachable engine stops here, before anything is written
                client = site.docker
            except DockerUnavailable as exc:
                exc.hint = f"{exc.hint}; or render the site without Docker: kheopsctl install --no-start"
                raise
            compose_command()
            checks.check_architecture(settings, checks.engine_arch(client.info()))
            _preflight(site, console)
            check_data_is_ours(site)
    else:
        try:  # nothing will start, but a guard is never skipped when the engine can answer it
            check_data_is_ours(site)
        except DockerUnavailable:
            pass

    result = InstallResult(settings=settings, layout=layout, timings=timings)
    with _timed(timings, "write"):
        for directory in (layout.dir, layout.secrets_dir, layout.state_dir):
            remove_stray_temps(directory)  # left by a run killed in the middle of an atomic write
        site.record_identity()
        secrets.ensure_secrets_dir(layout)
        if generated:  # until the summary showed it, a later run shows it (an interrupted run never did)
            write_atomic(layout.state_dir / UNSHOWN_PASSWORD, "", mode=0o600)
        result.created_secrets = secrets.ensure_all(layout, password)
        if generated and secrets.ADMIN_PASSWORD in result.created_secrets:
            result.generated_admin_password = password
        elif (layout.state_dir / UNSHOWN_PASSWORD).exists():
            result.generated_admin_password = secrets.read_secret(layout, secrets.ADMIN_PASSWORD)
        changed = [layout.config] if write_sitefile(layout, settings) else []
        changed += rendered.write()
        result.changed_files = [str(p.relative_to(layout.dir)) for p in changed]

    if opts.start:
        done = converge(site, console, timings)
        result.built_gateway_image = done.built_gateway_image
        result.services, result.recreated = done.up.services, done.up.recreated
        with _timed(timings, "realm"), console.status("Keycloak realm: reconciling"):
            result.realm_changes = realm_sync.reconcile(settings, layout, site.docker)
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
    if not probe.is_dir():  # e.g. --dir afile/sub: nothing can be created under a file
        raise KheopsError(f"--dir: {probe} is a file, so {layout.dir} cannot be created",
                          hint="choose a --dir whose parents are directories", exit_code=2)
    if not os.access(probe, os.W_OK):
        raise KheopsError(f"--dir: {probe} is not writable", hint="choose a directory you own, or fix its permissions")


def check_data_is_ours(site: Site) -> None:
    """Refuse to pair this site's secrets with a database volume that is not its own.

    New passwords against an old PostgreSQL data directory lock every service out: the data is intact but
    unreachable, and the containers restart in a loop. This happens when a site is installed into a new DIR
    (or its secrets/ was deleted) while a volume of the same project name survives. The volume's site-id label
    answers whose it is; only a volume made before site ids (no label) falls back to "our secrets exist".
    """
    name = site.volume_name("pgdata")
    found = volume_labels(site.docker, name)
    if found is None:
        return
    ours = site.owns(found)
    if ours or (ours is None and site.has_secret(Secret.POSTGRES)):
        return
    whose = (f"another site directory (site id {found.get(labels.SITE_ID)})" if ours is False
             else "an earlier install")
    raise KheopsError(
        f"volume {name} holds a database from {whose}, and {site.layout.secrets_dir} has no secrets for it",
        hint="install with --dir pointing at the original site directory (its secrets/ and "
             f"{site.layout.site_id_file.relative_to(site.dir)} unlock the data), set another project name "
             f"(KHEOPS_PROJECT or project in kheops.toml), or, to discard that data for good: docker volume rm {name}",
    )


def _preflight(site: Site, console: Console) -> None:
    with console.status("pre-flight checks"):
        results = run_preflight(site.settings, site.layout, site=site)
    for r in results:
        if r.status == "warn":
            console.print(f"[yellow]warning:[/] {r.message}", highlight=False)
    failed = [r for r in results if r.status in ("fail", "error")]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more: {', '.join(r.name for r in failed[1:])})" if len(failed) > 1 else ""
        raise KheopsError(f"pre-flight {first.name}: {first.message}{more}",
                          hint=first.hint or "run kheopsctl doctor --preflight for details")


def password_shown(layout: SiteLayout) -> None:
    """The summary showed the generated admin password: later runs no longer repeat it."""
    (layout.state_dir / UNSHOWN_PASSWORD).unlink(missing_ok=True)


def unshown_password_file(layout: SiteLayout) -> Path | None:
    """Where a generated admin password is, while it has not been shown (an interrupted first run)."""
    if (layout.state_dir / UNSHOWN_PASSWORD).exists() and layout.secret(secrets.ADMIN_PASSWORD).exists():
        return layout.secret(secrets.ADMIN_PASSWORD)
    return None
