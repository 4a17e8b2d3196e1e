"""Where the bundled templates and realms live, in a wheel or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    installed = _PKG / "_data" / name  # wheel: force-included by hatch
    if installed.is_dir():
        return installed
    checkout = _PKG.parent / name  # editable install / source tree
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"bundled {name}/ not found next to {_PKG}")


def templates_dir() -> Path:
    return _find("templates")


def realms_dir() -> Path:
    return _find("realms")


def package_root() -> Path:
    """The directory that holds the kheopsctl package (used as the gateway image build context)."""
    return _PKG.parent
