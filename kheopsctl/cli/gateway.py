"""`kheopsctl gateway serve|migrate` (placeholder until the gateway issue lands)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run or migrate the bundled authorization gateway.", no_args_is_help=True)
