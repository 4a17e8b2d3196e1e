"""Run the kheopsctl CLI in-process with Typer's CliRunner, with the shape of a finished subprocess.

Expected errors end inside the Typer app (kheopsctl.cli.KheopsGroup), so an edge case of the command line is a
function call here, not a process start. ``KHEOPS_*`` variables of the developer's shell are left out: the test
says which settings apply.
"""

from __future__ import annotations

import os
import subprocess

from typer.testing import CliRunner

from kheopsctl.cli import app


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    hermetic: dict[str, str | None] = {k: None for k in os.environ if k.startswith("KHEOPS_")}
    hermetic.update(env or {})
    result = CliRunner().invoke(app, list(args), env=hermetic, input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a bug, never an answer
    return subprocess.CompletedProcess(["kheopsctl", *args], result.exit_code, result.stdout, result.stderr)
