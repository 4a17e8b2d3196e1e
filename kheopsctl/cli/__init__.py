"""The Typer app. One module per command; commands are thin and call domain code.

Human output goes to stderr, data (``--json``) to stdout. Every KheopsError ends here, as one line, a hint and
its exit code: this is the single abort path.
"""

from __future__ import annotations

import sys

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
)
app.command("install")(install.command)
app.command("status")(status.command)
app.command("logs")(logs.command)
app.command("down")(down.command)
app.command("doctor")(doctor.command)
app.command("secure")(secure.command)
app.add_typer(gateway.app, name="gateway")


def main() -> None:
    try:
        app(standalone_mode=False)
    except KheopsError as exc:
        abort(exc)
    except KeyboardInterrupt:
        console.print("[red]error:[/] interrupted; run the same command again to finish")
        sys.exit(130)
    except typer.Exit as exc:  # raised by commands to set their exit code
        sys.exit(exc.exit_code)
    except (typer.Abort,):
        console.print("[red]error:[/] aborted")
        sys.exit(1)
    except Exception as exc:  # click usage errors carry their own exit code (2)
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def abort(exc: KheopsError) -> None:
    console.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
    if exc.hint:
        console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)
