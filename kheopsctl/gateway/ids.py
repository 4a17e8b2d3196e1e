"""Random identifiers: album ids, capability ids and capability secrets."""

from __future__ import annotations

import hashlib
import secrets


def album_id() -> str:
    return secrets.token_urlsafe(12)


def capability_id() -> str:
    return secrets.token_urlsafe(9)


def capability_secret() -> str:
    """22 URL-safe characters (128 random bits), as long as KHEOPS's tokens."""
    return secrets.token_urlsafe(16)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
