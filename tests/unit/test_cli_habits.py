"""The habits every CLI user expects: --version / -V, -h on every command, ``python -m kheopsctl``."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest
from typer.testing import CliRunner

from kheopsctl.cli import app

VERSION = f"kheopsctl {metadata.version('kheopsctl')}"


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    result = CliRunner().invoke(app, [flag])
    assert result.exit_code == 0 and result.stdout.strip() == VERSION


@pytest.mark.parametrize("argv", [["-h"], ["install", "-h"], ["doctor", "-h"], ["gateway", "-h"],
                                  ["gateway", "serve", "-h"], ["secure", "-h"]])
def test_short_help_everywhere(argv):
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0 and "Usage:" in result.stdout


def test_module_form_is_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "kheopsctl", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == VERSION
