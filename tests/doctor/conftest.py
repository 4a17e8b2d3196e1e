"""Helpers for the doctor tests: settings for a throw-away site directory, and running the real CLI in-process."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import jsonschema
import pytest

from kheopsctl.config import settings_from_dict
from kheopsctl.site import SiteLayout
from tests import clirun

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "kheopsctl" / "doctor" / "schema.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def site(tmp_path):
    """An empty site directory whose settings use free high ports (so pre-flight can pass on any host)."""
    data = {"project": "kdoctor-unit",
            "ports": {"http": free_port(), "https": free_port(), "keycloak": free_port()}}
    layout = SiteLayout(tmp_path / "site")
    layout.dir.mkdir()
    toml = "\n".join([f'project = "{data["project"]}"', "[ports]"] +
                     [f"{k} = {v}" for k, v in data["ports"].items()])
    layout.config.write_text(toml + "\n")
    return settings_from_dict(data), layout


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command line, in-process (tests/clirun.py); settings come from the test's site only."""
    return clirun.run(*args, env=env)


def validate(document: dict) -> None:
    jsonschema.validate(document, SCHEMA, cls=jsonschema.Draft202012Validator)


def by_name(document_or_results) -> dict:
    items = document_or_results["checks"] if isinstance(document_or_results, dict) else document_or_results
    return {(c["name"] if isinstance(c, dict) else c.name): c for c in items}
