"""The KHEOPS REST routes this package serves (DICOMweb routes come from ``kheopsctl.gateway.dicomweb``)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    from kheopsctl.gateway import openapi
    from kheopsctl.gateway.api import albums, capabilities, inbox, users, webhooks
    from kheopsctl.gateway.api import comments
    from kheopsctl.gateway.api import token

    return [
        *openapi.routes(),
        *albums.routes(),
        *comments.routes(),
        *users.routes(),
        *inbox.routes(),
        *capabilities.routes(),
        *token.routes(),
        *webhooks.routes(),
    ]
