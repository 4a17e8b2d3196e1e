"""The only place backup and restore reach into the deploy layer (render, compose, install, doctor).

The deploy packages are being reshaped around a Site object; keeping every such call here means that change
touches one small module of ours.
"""

from __future__ import annotations

from pathlib import Path


def docker_client():
    from kheopsctl.deploy.compose import docker_client as make

    return make()


def layout(site_dir: Path):
    from kheopsctl.deploy.layout import SiteLayout

    return SiteLayout(site_dir)


def load(site_dir: Path):
    from kheopsctl.config import load_settings

    return load_settings(site_dir)


def compose(settings, site_dir: Path, *args: str) -> None:
    from kheopsctl.deploy.compose import run_compose

    run_compose(settings, layout(site_dir), *args)


def render_only(site_dir: Path) -> None:
    """Render every site file from DIR/kheops.toml and secrets/ (``install --no-start``)."""
    from rich.console import Console

    from kheopsctl.deploy.install import InstallOptions, run_install

    run_install(InstallOptions(dir=site_dir, start=False, yes=True), Console(stderr=True, quiet=True))


def install_and_start(site_dir: Path, console) -> None:
    from kheopsctl.deploy.install import InstallOptions, run_install

    run_install(InstallOptions(dir=site_dir, yes=True), console)


def purge(settings, site_dir: Path) -> None:
    """``kheopsctl down --purge-data`` of the site in DIR."""
    from kheopsctl.deploy.operate import site_down

    site_down(settings, layout(site_dir), purge_data=True)


def doctor_document(site_dir: Path) -> dict:
    from kheopsctl.doctor import run_doctor, to_json

    return to_json(run_doctor(load(site_dir), layout(site_dir)))


def write_atomic(path: Path, data: str | bytes, mode: int) -> None:
    from kheopsctl.deploy.fsutil import write_atomic as write

    write(path, data, mode)
