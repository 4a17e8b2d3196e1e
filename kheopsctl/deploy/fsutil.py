"""Kept for old import paths: atomic writes live in kheopsctl.site.fsutil."""

from kheopsctl.site.fsutil import write_atomic

__all__ = ["write_atomic"]
