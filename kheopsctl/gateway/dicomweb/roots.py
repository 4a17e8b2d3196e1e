"""The API root a client came by, for the URLs the gateway writes into its answers.

A request through a link (``/api/link/<token>/...``, auth.py) gets ``<root>/api/link/<token>``, as KHEOPS does
for its ``X-Link-Authorization`` requests: a viewer that follows a RetrieveURL, a BulkDataURI or OHIF's
``wadoRoot`` keeps the credential it was given. Any other request gets ``<root>/api``. The token written there
is the caller's own, echoed back only to it.
"""

from __future__ import annotations


def api_root(request, gateway_base: str) -> str:
    token = request.scope.get("link_token")
    return f"{gateway_base}/link/{token}" if request.scope.get("link") and token else gateway_base
