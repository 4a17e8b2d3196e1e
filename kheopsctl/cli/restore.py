"""`kheopsctl restore`: a backup into a new site directory (this host or another), or --verify it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from kheopsctl.cli.common import JsonOption, console, emit_json
from kheopsctl.errors import KheopsError


def command(
    archive: Path = typer.Argument(..., help="The backup archive (kheops-PROJECT-DATE.tar[.age])."),
    dir: Optional[Path] = typer.Option(None, "--dir", help="Site directory to restore into (new or empty)."),  # noqa: A002
    identity: Optional[Path] = typer.Option(None, "--identity", "-i",
                                            help="age secret key file, for an encrypted archive."),
    project: Optional[str] = typer.Option(None, "--project", help="Compose project name (default: the backup's)."),
    force: bool = typer.Option(False, "--force", help="Replace the site in DIR (after backing it up)."),
    verify: bool = typer.Option(False, "--verify",
                                help="Restore into a throwaway project, compare with the manifest, remove it."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_out: bool = JsonOption,
) -> None:
    """Restore a backup: checks every checksum first, refuses to overwrite a site without --force, ends with doctor."""
    from kheopsctl.ops.restore import RestoreOptions, run_restore, run_verify

    def notice(message: str) -> None:
        console.print(message, highlight=False, markup=False)

    if verify:
        result = run_verify(archive, identity, notice)
        console.print(f"[green]backup verified[/]: {archive}", highlight=False)
        if json_out:
            emit_json(result)
        return
    if dir is None:
        raise KheopsError("restore needs --dir, the directory of the restored site",
                          hint="give a new directory, e.g. --dir ./kheops", exit_code=2)

    def confirm(question: str) -> bool:
        if not sys.stdin.isatty():
            raise KheopsError("replacing a site needs confirmation", hint="add --yes to confirm without a terminal",
                              exit_code=2)
        return typer.confirm(question, default=False, err=True)

    result = run_restore(RestoreOptions(archive=archive, dir=dir, identity=identity, yes=yes, force=force,
                                        project=project), console, notice, confirm)
    console.print(f"[green]restored[/] {archive.name} into {result.dir} (project {result.project}, "
                  f"{result.seconds:.0f} s); doctor is green", highlight=False)
    if json_out:
        emit_json(result.to_json())
