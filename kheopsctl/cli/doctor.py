"""`kheopsctl doctor`: run the checks, print a table on stderr and (with --json) the stable document on stdout.

Exit status: 0 when no check is fail or error, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from kheopsctl.cli.common import ConfigOption, DirOption, JsonOption, console, emit_json
from kheopsctl.doctor import run_doctor, to_json
from kheopsctl.doctor.registry import all_checks, select
from kheopsctl.errors import KheopsError
from kheopsctl.site import NoSite, Site

STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim", "error": "magenta"}


def command(
    site_dir: Path = DirOption,
    config: Optional[Path] = ConfigOption,
    as_json: bool = JsonOption,
    preflight: bool = typer.Option(False, "--preflight", help="Only the host checks that install runs (no stack needed)."),
    names: Optional[List[str]] = typer.Option(
        None, "--check", help="Run only this check, or group (e.g. keycloak); repeat for more."
    ),
    list_checks: bool = typer.Option(False, "--list-checks", help="List the checks and exit."),
) -> None:
    """Check this host (pre-flight) and the running site (live), and say how to fix what is wrong."""
    if list_checks:
        checks = select(names, preflight_only=preflight) if names else [
            c for c in all_checks() if c.phase == "preflight" or not preflight
        ]
        if as_json:
            emit_json({"checks": [{"name": c.name, "phase": c.phase, "description": c.description} for c in checks]})
        else:
            table = Table(box=None, show_header=True, header_style="bold")
            table.add_column("check")
            table.add_column("phase")
            table.add_column("what it checks")
            for c in checks:
                table.add_row(c.name, c.phase, c.description)
            console.print(table)
        return

    checks = select(names, preflight_only=preflight)  # unknown names: exit 2 before any work
    live = any(c.phase == "live" for c in checks)
    try:
        site = Site.open(site_dir, config, must_exist=live and config is None)
    except NoSite as exc:
        exc.hint = "pass --dir of an installed site, or --preflight to check this host before installing"
        raise

    def notice(name: str, elapsed: float) -> None:
        console.print(f"[dim]… {name} still running ({elapsed:.0f} s)[/]", highlight=False)

    report = run_doctor(site.settings, site.layout, names=[c.name for c in checks], notice=notice, site=site)
    document = to_json(report)
    print_table(document)
    if as_json:
        emit_json(document)
    if not document["summary"]["healthy"]:
        bad = [c["name"] for c in document["checks"] if c["status"] in ("fail", "error")]
        # through the CLI edge: one line, a hint, exit status 1
        raise KheopsError(f"{len(bad)} check(s) failed: {', '.join(bad)}",
                          hint="each failing line above says how to fix it; --check NAME re-runs one check",
                          exit_code=1)


def print_table(document: dict) -> None:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("result")
    for c in document["checks"]:
        cell = Text(c["message"])
        if c["hint"] and c["status"] != "ok":
            cell.append("\nhint: " + c["hint"], style="yellow")
        table.add_row(Text(c["status"], style=STYLE[c["status"]]), c["name"], cell)
    console.print(table)
    s = document["summary"]
    counts = ", ".join(f"{s[k]} {k}" for k in ("ok", "warn", "fail", "skip", "error") if s[k])
    verdict = "[green]healthy[/]" if s["healthy"] else "[red]problems found[/]"
    console.print(f"{verdict}: {counts} ({s['duration_ms'] / 1000:.1f} s)", highlight=False)
