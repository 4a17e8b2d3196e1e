"""Authenticated encryption for what the web application keeps: tokens at rest, the login cookie in transit.

Keys are derived (HKDF-SHA256) from the web client's secret, one per purpose, so a database dump or a copied
login cookie is useless without the secret, and a value sealed for one purpose never opens as another.
"""

from __future__ import annotations

import base64
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class Sealer:
    def __init__(self, secret: str, purpose: str):
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=f"kheops-web/{purpose}".encode()).derive(secret.encode())
        self._aead = AESGCM(key)
        self._aad = purpose.encode()

    def seal(self, value: dict) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, json.dumps(value).encode(), self._aad)

    def open(self, blob: bytes) -> dict | None:
        """The sealed value, or None when it was not sealed by us for this purpose (or was altered)."""
        if len(blob) < 29:
            return None
        try:
            return json.loads(self._aead.decrypt(blob[:12], blob[12:], self._aad))
        except (InvalidTag, ValueError):
            return None

    def seal_text(self, value: dict) -> str:
        return base64.urlsafe_b64encode(self.seal(value)).rstrip(b"=").decode()

    def open_text(self, text: str) -> dict | None:
        try:
            blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, TypeError):
            return None
        return self.open(blob)
