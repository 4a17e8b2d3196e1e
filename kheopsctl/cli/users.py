"""`kheopsctl users`: the site's accounts (add, list, disable, enable, reset-password, delete).

Thin: the work is in kheopsctl.ops.users. Human output goes to stderr, data (--json) to stdout. A password is
printed only when kheopsctl generated it, once, right after the account got it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from kheopsctl.cli.common import DirOption, JsonOption, console, emit_json
from kheopsctl.errors import KheopsError
from kheopsctl.ops.sitectx import SiteContext
from kheopsctl.ops.users import Password, UserDirectory, UserInfo, check_email, generate_password, password_from_file

app = typer.Typer(help="Manage the site's user accounts (in its Keycloak realm).", no_args_is_help=True)

EmailArgument = typer.Argument(..., metavar="EMAIL", help="The user's e-mail address (also its login).")
PasswordFileOption = typer.Option(
    None, "--password-file", metavar="FILE",
    help="Read the password from FILE (mode 0600, one line; - for stdin). Default: a generated temporary password.")


def _directory(dir: Path) -> tuple[SiteContext, UserDirectory]:  # noqa: A002
    ctx = SiteContext.open(dir)
    return ctx, UserDirectory.connect(ctx)


def _password(password_file: Path | None, temporary: bool) -> Password:
    if password_file is None:
        return generate_password()
    return password_from_file(password_file, temporary=temporary)


def _show_generated(password: Password, email: str) -> None:
    if password.generated:
        console.print(f"temporary password for {email} (shown once; it must be changed at the first login):",
                      highlight=False, soft_wrap=True)
        # alone on its line, without markup or wrapping, so it can be copied exactly
        console.print(password.value, markup=False, highlight=False, soft_wrap=True)


def _emit(info: UserInfo, json_out: bool, password: Password | None = None) -> None:
    if json_out:
        data = info.to_dict()
        if password is not None and password.generated:
            data["temporary_password"] = password.value
        emit_json(data)


@app.command("add")
def add(
    email: str = EmailArgument,
    name: str = typer.Option(None, "--name", help="Full name, e.g. 'Ada Lovelace' (else asked at first login)."),
    password_file: Path = PasswordFileOption,
    temporary: bool = typer.Option(False, "--temporary", help="With --password-file: require a change at first login."),
    dir: Path = DirOption,  # noqa: A002
    json_out: bool = JsonOption,
) -> None:
    """Create an account that can log in to the site."""
    check_email(email)  # bad input fails before anything is read or reached
    password = _password(password_file, temporary)
    ctx, users = _directory(dir)
    info = users.add(email, name, password)
    console.print(f"[green]created user {info.email}[/] in realm {users.realm}", highlight=False)
    _show_generated(password, info.email)
    _emit(info, json_out, password)


@app.command("list")
def list_users(dir: Path = DirOption, json_out: bool = JsonOption) -> None:  # noqa: A002
    """List the accounts of the realm."""
    ctx, users = _directory(dir)
    accounts = users.accounts()
    if json_out:
        emit_json([u.to_dict() for u in accounts])
        return
    table = Table(title=f"users of {ctx.settings.project} (realm {users.realm})", title_justify="left")
    table.add_column("email", no_wrap=True)  # the one column that must stay whole: it is the login
    for col in ("name", "state", "created"):
        table.add_column(col)
    for u in accounts:
        state = "[green]enabled[/]" if u.enabled else "[red]disabled[/]"
        if u.required_actions:  # e.g. a temporary password not changed yet
            state += f" ({', '.join(a.lower().replace('_', ' ') for a in u.required_actions)} due)"
        table.add_row(u.email, u.name or "-", state, u.created[:10])
    console.print(table)
    console.print(f"{len(accounts)} user(s)", highlight=False)


@app.command("disable")
def disable(email: str = EmailArgument, dir: Path = DirOption, json_out: bool = JsonOption) -> None:  # noqa: A002
    """Refuse the account's logins and end its sessions (its data stays)."""
    ctx, users = _directory(dir)
    info = users.set_enabled(email, False)
    console.print(f"[green]disabled {info.email}[/] (sessions ended; a token already issued lives until it expires, "
                  f"at most {ctx.settings.keycloak.access_token_lifespan} s)", highlight=False)
    _emit(info, json_out)


@app.command("enable")
def enable(email: str = EmailArgument, dir: Path = DirOption, json_out: bool = JsonOption) -> None:  # noqa: A002
    """Allow a disabled account to log in again."""
    ctx, users = _directory(dir)
    info = users.set_enabled(email, True)
    console.print(f"[green]enabled {info.email}[/]", highlight=False)
    _emit(info, json_out)


@app.command("reset-password")
def reset_password(
    email: str = EmailArgument,
    password_file: Path = PasswordFileOption,
    temporary: bool = typer.Option(False, "--temporary", help="With --password-file: require a change at next login."),
    send_email: bool = typer.Option(False, "--send-email",
                                    help="Mail the user a link to choose a password instead (needs [smtp])."),
    dir: Path = DirOption,  # noqa: A002
    json_out: bool = JsonOption,
) -> None:
    """Give the account a new password (the old one stops working, its sessions end)."""
    check_email(email)
    if send_email and password_file is not None:
        raise KheopsError("--send-email and --password-file exclude each other",
                          hint="choose one way to give the new password", exit_code=2)
    password = None if send_email else _password(password_file, temporary)
    ctx, users = _directory(dir)
    if password is None:
        info = users.send_password_email(email)
        console.print(f"[green]sent a password link to {info.email}[/]", highlight=False)
    else:
        info = users.reset_password(email, password)
        console.print(f"[green]new password set for {info.email}[/] (its sessions were ended)", highlight=False)
        _show_generated(password, info.email)
    _emit(info, json_out, password)


@app.command("delete")
def delete(
    email: str = EmailArgument,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    dir: Path = DirOption,  # noqa: A002
    json_out: bool = JsonOption,
) -> None:
    """Delete the account from the realm (the studies it shared and its albums stay in KHEOPS)."""
    address = check_email(email)
    ctx, users = _directory(dir)
    users.get(address)  # an unknown user is reported before asking
    if not yes:
        if not sys.stdin.isatty():
            raise KheopsError(f"deleting {address} cannot be undone and needs confirmation",
                              hint="add --yes to confirm without a terminal", exit_code=2)
        if not typer.confirm(f"Delete the account {address}?", default=False, err=True):
            raise KheopsError("not confirmed: nothing was deleted", exit_code=1)
    info = users.delete(address)
    console.print(f"[green]deleted {info.email}[/]", highlight=False)
    _emit(info, json_out)
