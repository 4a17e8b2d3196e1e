"""`kheopsctl status` (placeholder until its issue lands)."""

from __future__ import annotations

from kheopsctl.errors import KheopsError


def command() -> None:
    """Not implemented yet."""
    raise KheopsError("status is not implemented yet")
