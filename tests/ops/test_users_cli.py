"""The `kheopsctl users` edges, in-process through the console script's own entry point (kheopsctl.cli.main,
so errors go through the single abort path) with click's CliRunner, against the session's real Keycloak."""

from __future__ import annotations

import json
import sys
import uuid

import click
import pytest
from click.testing import CliRunner  # the wrapper is a plain click command; it runs the Typer app

from kheopsctl.cli import main
from tests.ops.browser import Browser, Refused

pytestmark = pytest.mark.services


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def console_script(argv):
    """What the installed `kheopsctl` does with ARGV (sys.argv is what Typer reads in standalone mode)."""
    saved = sys.argv
    sys.argv = ["kheopsctl", *argv]
    try:
        main()
    finally:
        sys.argv = saved


def kheopsctl(*args: str, input: str | None = None):
    result = CliRunner().invoke(console_script, list(args), input=input, catch_exceptions=False)
    return result


def address(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}@example.org"


def one_line_error(result, exit_code: int, *words: str) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ") and len(lines) == 2, result.stderr
    for word in words:
        assert word in result.stderr
    assert result.stdout == ""


@pytest.fixture
def password_file(tmp_path):
    def make(value: str, mode: int = 0o600):
        path = tmp_path / f"pw-{uuid.uuid4().hex[:6]}"
        path.write_text(value + "\n")
        path.chmod(mode)
        return path

    return make


def test_add_with_generated_password_shows_it_once_on_stderr(kc_site, keycloak):
    email = address("gen")
    result = kheopsctl("users", "add", email, "--name", "Gen Erated", "--dir", str(kc_site))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # human output only
    lines = result.stderr.splitlines()
    marker = next(i for i, line in enumerate(lines) if "shown once" in line)
    password = lines[marker + 1].strip()
    assert len(password) >= 20 and result.stderr.count(password) == 1
    with Browser(keycloak.base_url) as browser:
        browser.login(email, password, new_password="after-first-Login-1")


def test_add_json_carries_the_generated_password_on_stdout_only(kc_site):
    email = address("json")
    result = kheopsctl("users", "add", email, "--dir", str(kc_site), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["email"] == email and data["required_actions"] == ["UPDATE_PASSWORD"]
    assert result.stderr.count(data["temporary_password"]) == 1  # once for the human, once as data
    assert result.stdout.count(data["temporary_password"]) == 1


def test_add_with_password_file_never_prints_it(kc_site, keycloak, password_file):
    email = address("file")
    secret = "file-Password-" + uuid.uuid4().hex
    result = kheopsctl("users", "add", email, "--name", "Fi Le", "--password-file", str(password_file(secret)),
                       "--dir", str(kc_site), "--json")
    assert result.exit_code == 0, result.stderr
    assert secret not in result.output and "temporary_password" not in result.stdout
    with Browser(keycloak.base_url) as browser:
        browser.login(email, secret)


def test_password_from_stdin(kc_site, keycloak):
    email = address("stdin")
    result = kheopsctl("users", "add", email, "--name", "Std In", "--password-file", "-", "--dir", str(kc_site),
                       input="stdin-Password-1\n")
    assert result.exit_code == 0 and "stdin-Password-1" not in result.output
    with Browser(keycloak.base_url) as browser:
        browser.login(email, "stdin-Password-1")


def test_password_file_readable_by_others_is_refused_before_anything(kc_site, password_file):
    email = address("mode")
    result = kheopsctl("users", "add", email, "--password-file", str(password_file("leaky-Password", 0o644)),
                       "--dir", str(kc_site))
    one_line_error(result, 2, "readable by others", "chmod 600")
    assert "leaky" not in result.output
    listed = json.loads(kheopsctl("users", "list", "--json", "--dir", str(kc_site)).stdout)
    assert email not in [u["email"] for u in listed]


def test_duplicate_email(kc_site, password_file):
    email = address("dup")
    assert kheopsctl("users", "add", email, "--password-file", str(password_file("dup-Password-1")),
                     "--dir", str(kc_site)).exit_code == 0
    one_line_error(kheopsctl("users", "add", email.upper(), "--dir", str(kc_site)), 1, "already exists",
                   "reset-password")


@pytest.mark.parametrize("bad", ["nobody", "x@y", "a b@example.org", "@example.org"])
def test_invalid_email_fails_before_reaching_keycloak(tmp_path, bad):
    # tmp_path holds no site: the address is judged first
    one_line_error(kheopsctl("users", "add", bad, "--dir", str(tmp_path)), 2, "not a valid e-mail address")


@pytest.mark.parametrize("command", [["list"], ["add", "a@example.org"], ["disable", "a@example.org"],
                                     ["delete", "a@example.org", "--yes"]])
def test_no_site_in_dir(tmp_path, command):
    one_line_error(kheopsctl("users", *command, "--dir", str(tmp_path)), 2, "no site in", "kheopsctl install")


@pytest.mark.parametrize("command", [["disable"], ["enable"], ["reset-password"], ["delete", "--yes"]])
def test_unknown_user(kc_site, command):
    ghost = address("ghost")
    one_line_error(kheopsctl("users", command[0], ghost, *command[1:], "--dir", str(kc_site)), 1,
                   f"no user {ghost}", "users list")


def test_unreachable_keycloak(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    # a site whose Keycloak port is closed: port 9 (discard) is never served on the test machines
    (site / "kheops.toml").write_text("[ports]\nkeycloak = 9\n")
    (site / "secrets").mkdir(mode=0o700)
    (site / "secrets" / "keycloak_admin_password").write_text("whatever\n")
    result = kheopsctl("users", "list", "--dir", str(site))
    one_line_error(result, 1, "cannot be reached", "127.0.0.1:9", "kheopsctl status")


def test_list_json_is_data_on_stdout(kc_site, password_file):
    email = address("lst")
    kheopsctl("users", "add", email, "--name", "Li St", "--password-file", str(password_file("lst-Password-1")),
              "--dir", str(kc_site))
    result = kheopsctl("users", "list", "--json", "--dir", str(kc_site))
    assert result.exit_code == 0
    row = next(u for u in json.loads(result.stdout) if u["email"] == email)
    assert row["name"] == "Li St" and row["enabled"] is True and set(row) == {
        "id", "email", "name", "enabled", "email_verified", "created", "required_actions"}
    human = kheopsctl("users", "list", "--dir", str(kc_site))
    assert human.stdout == "" and email in human.stderr


def test_disable_enable_reset_delete_round(kc_site, keycloak, password_file):
    email = address("round")
    d = ["--dir", str(kc_site)]
    assert kheopsctl("users", "add", email, "--name", "Ro Und", "--password-file",
                     str(password_file("round-Password-1")), *d).exit_code == 0
    assert kheopsctl("users", "disable", email, *d).exit_code == 0
    with Browser(keycloak.base_url) as browser, pytest.raises(Refused, match="(?i)disabled"):
        browser.login(email, "round-Password-1")
    assert kheopsctl("users", "enable", email, *d).exit_code == 0
    result = kheopsctl("users", "reset-password", email, "--password-file", str(password_file("round-Password-2")),
                       *d, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["email"] == email
    assert "round-Password-2" not in result.output
    with Browser(keycloak.base_url) as browser, pytest.raises(Refused, match="Invalid"):
        browser.login(email, "round-Password-1")
    with Browser(keycloak.base_url) as browser:
        browser.login(email, "round-Password-2")
    one_line_error(kheopsctl("users", "delete", email, *d), 2, "needs confirmation", "--yes")  # no terminal
    assert kheopsctl("users", "delete", email, "--yes", *d).exit_code == 0
    one_line_error(kheopsctl("users", "disable", email, *d), 1, "no user")


def test_send_email_and_password_file_exclude_each_other(kc_site, password_file):
    result = kheopsctl("users", "reset-password", address("x"), "--send-email", "--password-file",
                       str(password_file("x-Password-1")), "--dir", str(kc_site))
    one_line_error(result, 2, "exclude each other")
