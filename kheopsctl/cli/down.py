"""`kheopsctl down`: stop and remove the site's containers; data volumes are kept unless --purge-data."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kheopsctl.cli.common import DirOption, JsonOption, console, emit_json
from kheopsctl.deploy import operate
from kheopsctl.errors import KheopsError, UsageError
from kheopsctl.site import Site


def command(
    dir: Path = DirOption,  # noqa: A002
    purge_data: bool = typer.Option(False, "--purge-data", help="Also delete the data volumes (databases, images)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_out: bool = JsonOption,
) -> None:
    """Stop the site. Secrets, settings and (without --purge-data) volumes stay."""
    site = Site.open(dir)
    settings = site.settings
    if purge_data and not yes:
        if not sys.stdin.isatty():
            raise UsageError("--purge-data deletes every study and account of the site and needs confirmation",
                             hint="add --yes to confirm without a terminal")
        if not typer.confirm(f"Delete all data volumes of {settings.project} (studies, users, databases)?",
                             default=False, err=True):
            raise KheopsError("not confirmed: nothing was deleted", exit_code=1)
    result = operate.down(site, purge_data)
    what = "containers and data volumes removed" if purge_data else "containers removed, data volumes kept"
    console.print(f"[green]{settings.project}: {what}[/]", highlight=False)
    if json_out:
        emit_json(result)
