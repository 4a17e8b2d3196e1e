"""`kheopsctl logs`: the site's container logs (one service or all)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kheopsctl.cli.common import DirOption
from kheopsctl.deploy import operate
from kheopsctl.site import Site


def command(
    service: Optional[str] = typer.Argument(None, help="postgres, keycloak, orthanc, gateway, nginx (default: all)"),
    dir: Path = DirOption,  # noqa: A002
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new lines."),
    tail: int = typer.Option(200, "--tail", "-n", min=0, help="Lines to show from the end of each log."),
) -> None:
    """Print the logs of the site's containers."""
    code = operate.logs(Site.open(dir), service, follow, tail)
    if code:
        raise typer.Exit(code)
