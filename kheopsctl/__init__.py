"""kheopsctl: install, secure, check and operate a KHEOPS deployment."""

__version__ = "0.1.0"
