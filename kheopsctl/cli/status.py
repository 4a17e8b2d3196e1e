"""`kheopsctl status`: the state of each service of the site."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from kheopsctl.cli.common import DirOption, JsonOption, console, emit_json
from kheopsctl.deploy import operate
from kheopsctl.site import Site


def command(dir: Path = DirOption, json_out: bool = JsonOption) -> None:  # noqa: A002
    """Show each service's state and health (exit 1 when one is not healthy)."""
    status = operate.status(Site.open(dir))
    if json_out:
        emit_json(status)
    else:
        table = Table(title=f"{status['project']} ({status['root_url']})", title_justify="left")
        for col in ("service", "state", "restarts", "container"):
            table.add_column(col)
        for name, svc in status["services"].items():
            color = "green" if svc["state"] in ("healthy", "running") else "red"
            table.add_row(name, f"[{color}]{svc['state']}[/]", str(svc["restarts"]), svc["container"] or "-")
        console.print(table)
    if not status["healthy"]:
        raise typer.Exit(1)
