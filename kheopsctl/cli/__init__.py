"""The Typer app. One module per command; commands are thin and call domain code.

Human output goes to stderr, data (``--json``) to stdout. Every KheopsError ends here, as one line, a hint and
its exit code: this is the single abort path.
"""

from __future__ import annotations

import sys
from importlib import metadata

import typer

from kheopsctl.cli import doctor, down, gateway, install, logs, secure, status
from kheopsctl.cli.common import console
from kheopsctl.errors import KheopsError

app = typer.Typer(
    name="kheopsctl",
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
app.add_typer(gateway.app, name="gateway")


def main() -> None:
    # standalone mode: click itself handles usage errors (exit 2), typer.Exit codes and Ctrl-C (exit 1)
    try:
        app()
    except KheopsError as exc:
        abort(exc)


def abort(exc: KheopsError) -> None:
    console.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
    if exc.hint:
        console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)
