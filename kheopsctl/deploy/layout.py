"""Kept for the modules that still import it from here (kheopsctl.ops.sitectx): the layout lives in kheopsctl.site."""

from kheopsctl.site.layout import SiteLayout

__all__ = ["SiteLayout"]
