"""Options and helpers shared by the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from kheopsctl.errors import KheopsError

# human output: stderr; data: stdout
console = Console(stderr=True)

DirOption = typer.Option(Path("./kheops"), "--dir", help="Site directory (kheops.toml, secrets/, rendered files).")
ConfigOption = typer.Option(None, "--config", help="Settings file layered over DIR/kheops.toml (its values win).")
JsonOption = typer.Option(False, "--json", help="Print the result as JSON on stdout.")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def abort(exc: KheopsError) -> None:
    """The single way an expected error ends a command: one line, a hint, the error's exit code."""
    console.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
    if exc.hint:
        console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)
