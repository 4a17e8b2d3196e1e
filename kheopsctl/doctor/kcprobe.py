"""Read the realm and its clients through Keycloak's admin REST API.

Self-contained (httpx and the standard library only) because the same source also runs inside the gateway
container when Keycloak is not published on this host (secured sites keep it on the internal network).
"""

import json

import httpx


def fetch_realm(base: str, user: str, password: str, realm: str, verify=True, headers=None, extensions=None):
    """{"realm": <representation>, "clients": [...]} or {"error": ..., "status": ...}."""
    headers = dict(headers or {})
    extensions = extensions or {}
    with httpx.Client(timeout=5, verify=verify, follow_redirects=False) as client:
        try:
            r = client.post(
                f"{base}/realms/master/protocol/openid-connect/token",
                data={"grant_type": "password", "client_id": "admin-cli", "username": user, "password": password},
                headers=headers, extensions=extensions,
            )
        except httpx.HTTPError as exc:
            return {"error": f"{type(exc).__name__}: {exc}", "stage": "connect"}
        if r.status_code != 200:
            return {"error": f"admin login refused (HTTP {r.status_code})", "status": r.status_code, "stage": "login"}
        auth = {**headers, "Authorization": "Bearer " + r.json()["access_token"]}
        r = client.get(f"{base}/admin/realms/{realm}", headers=auth, extensions=extensions)
        if r.status_code == 404:
            return {"error": f"realm {realm!r} does not exist", "status": 404, "stage": "realm"}
        if r.status_code != 200:
            return {"error": f"reading realm {realm!r}: HTTP {r.status_code}", "status": r.status_code, "stage": "realm"}
        representation = r.json()
        r = client.get(f"{base}/admin/realms/{realm}/clients", headers=auth, extensions=extensions)
        if r.status_code != 200:
            return {"error": f"listing clients: HTTP {r.status_code}", "status": r.status_code, "stage": "clients"}
        return {"realm": representation, "clients": r.json()}


if __name__ == "__main__":  # inside a container: arguments come from the environment, result on stdout
    import os

    print(json.dumps(fetch_realm(os.environ["KC_BASE"], os.environ["KC_USER"], os.environ["KC_PASSWORD"],
                                 os.environ["KC_REALM"])))
