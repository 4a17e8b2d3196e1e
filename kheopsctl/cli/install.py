"""`kheopsctl install`: from a bare Docker host to a healthy site; safe to run again."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kheopsctl.cli.common import ConfigOption, DirOption, JsonOption, console, emit_json
from kheopsctl.deploy.install import InstallOptions, InstallResult, password_shown, run_install, unshown_password_file
from kheopsctl.site import SiteLayout


def command(
    dir: Path = DirOption,  # noqa: A002
    config: Optional[Path] = ConfigOption,
    root_url: Optional[str] = typer.Option(None, "--root-url", help="Public URL of the site, e.g. http://127.0.0.1"),
    no_start: bool = typer.Option(False, "--no-start", help="Write settings, secrets and files; start nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Never prompt (a missing admin password is generated)."),
    json_out: bool = JsonOption,
    admin_password_file: Optional[Path] = typer.Option(
        None, "--admin-password-file", help="File holding the Keycloak admin password (first install only)."),
) -> None:
    """Render the site into DIR, create missing secrets, start the stack and wait until it is healthy.

    Examples:

      kheopsctl install --dir ./kheops --yes

      kheopsctl install --dir ./kheops --root-url http://kheops.lan:8081   (with ports.http = 8081)

      kheopsctl install --dir ./kheops --no-start   (write the files only; no Docker needed)
    """
    opts = InstallOptions(dir=dir, config=config, root_url=root_url, start=not no_start, yes=yes,
                          admin_password_file=admin_password_file)
    try:
        result = run_install(opts, console, prompt=_prompt)
    except BaseException:
        _say_where_the_password_is(SiteLayout(dir))
        raise
    _summary(result)
    password_shown(result.layout)
    if json_out:
        emit_json(result.to_json())


def _prompt() -> str:
    return typer.prompt("Keycloak admin password (empty: generate one)", default="", hide_input=True,
                        confirmation_prompt=True, show_default=False, err=True)


def _say_where_the_password_is(layout: SiteLayout) -> None:
    """The run stops before its summary: a password it generated must not be lost without a word."""
    where = unshown_password_file(layout)
    if where is not None:
        console.print(f"[yellow]note:[/] the Keycloak admin password generated for this site is in {where} "
                      "(not shown yet: the next install shows it)", highlight=False, soft_wrap=True)


def _summary(r: InstallResult) -> None:
    s = r.settings
    pw_file = r.layout.secret("keycloak_admin_password")
    if r.created_secrets:
        console.print(f"created secrets in {r.layout.secrets_dir}: {', '.join(r.created_secrets)}", highlight=False)
    if r.generated_admin_password:
        # shown exactly once; it stays readable (0600) in the secrets file
        console.print(f"[bold]Keycloak admin password (shown once):[/] {r.generated_admin_password}", highlight=False)
    if not r.started:
        console.print(f"[green]site rendered[/] in {r.layout.dir} (not started: --no-start)", highlight=False)
        console.print(f"start it with: kheopsctl install --dir {r.layout.dir}", highlight=False)
        return
    if r.recreated:
        console.print(f"(re)created: {', '.join(r.recreated)}", highlight=False)
    if r.realm_changes:
        console.print(f"realm updated: {'; '.join(r.realm_changes)}", highlight=False)
    console.print(f"[green]KHEOPS is up[/] ({r.seconds:.0f}s)", highlight=False)
    console.print(f"  site:      {s.root_url}", highlight=False)
    console.print(f"  API:       {s.root_url}/api/", highlight=False)
    console.print(f"  Keycloak:  {s.keycloak_public_url}/admin/ (user {s.keycloak.admin_user})", highlight=False)
    console.print(f"  password:  {pw_file}", highlight=False)
    console.print(f"create your first user: kheopsctl users add EMAIL --name 'First Last' --dir {r.layout.dir}",
                  highlight=False, soft_wrap=True)
