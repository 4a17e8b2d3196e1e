"""The Typer app. One module per command; commands are thin and call domain code.

Human output goes to stderr, data (``--json``) to stdout. Every KheopsError a command raises ends inside the
app (``KheopsGroup``), as one line, a hint and its exit code: this is the single abort path, so the CLI's
edges are tested in-process with Typer's CliRunner.
"""

from __future__ import annotations

from importlib import metadata

import typer
from typer.core import TyperGroup

from kheopsctl.cli import backup, doctor, down, gateway, install, logs, restore, secure, status, users
from kheopsctl.cli.common import abort
from kheopsctl.errors import KheopsError


class KheopsGroup(TyperGroup):
    """Turns an expected error of any subcommand into its one-line message, hint and exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KheopsError as exc:
            abort(exc)


app = typer.Typer(
    name="kheopsctl",
    cls=KheopsGroup,
    help="Install, secure, check and operate a KHEOPS site.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kheopsctl {metadata.version('kheopsctl')}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print kheopsctl's version and exit.")) -> None:
    """Install, secure, check and operate a KHEOPS site."""
app.command("install")(install.command)
app.command("status")(status.command)
app.command("logs")(logs.command)
app.command("down")(down.command)
app.command("doctor")(doctor.command)
app.command("secure")(secure.command)
app.command("backup")(backup.command)
app.command("restore")(restore.command)
app.add_typer(gateway.app, name="gateway")
app.add_typer(users.app, name="users")


def main() -> None:
    # standalone mode: click handles usage errors (exit 2), typer.Exit codes (from abort too) and Ctrl-C (exit 1)
    app()
