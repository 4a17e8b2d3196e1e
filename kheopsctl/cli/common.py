"""Options and helpers shared by the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

# human output: stderr; data: stdout
console = Console(stderr=True)

DirOption = typer.Option(Path("./kheops"), "--dir", help="Site directory (kheops.toml, secrets/, rendered files).")
ConfigOption = typer.Option(None, "--config", help="Settings file to use instead of DIR/kheops.toml.")
JsonOption = typer.Option(False, "--json", help="Print the result as JSON on stdout.")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
