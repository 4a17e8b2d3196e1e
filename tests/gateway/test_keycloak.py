"""Token validation against a real Keycloak 26 serving the realm kheopsctl renders (real access tokens from the
browser flow with PKCE and from the kheopsctl client's service account)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx
import jwt
import pytest

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def alice(keycloak):
    keycloak.create_user("alice", "alice-password-1", "alice@example.org", "Alice", "Liddell")
    return keycloak.user_tokens("alice", "alice-password-1")


def get(gw, token, path="/api/albums"):
    return httpx.get(gw + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_user_access_token_is_accepted_and_provisions_the_user(keycloak_gateway, alice, keycloak):
    claims = jwt.decode(alice["access_token"], options={"verify_signature": False})
    assert claims["iss"] == keycloak.issuer and claims["azp"] == "loginConnect"
    assert "kheops" in claims["scope"].split()
    assert get(keycloak_gateway, alice["access_token"]).status_code == 200
    me = get(keycloak_gateway, alice["access_token"], "/api/users?reference=alice@example.org")
    assert me.status_code == 200
    assert me.json() == {"sub": claims["sub"], "email": "alice@example.org", "name": "Alice Liddell"}


def test_service_account_token_is_accepted(keycloak_gateway, keycloak):
    token = keycloak.service_token()
    assert jwt.decode(token, options={"verify_signature": False})["azp"] == "kheopsctl"
    assert get(keycloak_gateway, token).status_code == 200


def test_id_and_refresh_tokens_are_not_access_tokens(keycloak_gateway, alice):
    assert get(keycloak_gateway, alice["id_token"]).status_code == 401
    assert get(keycloak_gateway, alice["refresh_token"]).status_code == 401


def test_token_of_another_realm_is_refused(keycloak_gateway, keycloak):
    assert get(keycloak_gateway, keycloak.master_token()).status_code == 401


def test_token_of_a_client_outside_the_audience_is_refused(keycloak_gateway, keycloak):
    keycloak.admin("POST", "/clients", json={
        "clientId": "not-kheops", "publicClient": False, "secret": "not-kheops-secret", "serviceAccountsEnabled": True,
        "standardFlowEnabled": False, "directAccessGrantsEnabled": False})
    r = httpx.post(f"{keycloak.issuer}/protocol/openid-connect/token", data={
        "grant_type": "client_credentials", "client_id": "not-kheops", "client_secret": "not-kheops-secret"})
    r.raise_for_status()
    token = r.json()["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == keycloak.issuer
    resp = get(keycloak_gateway, token)
    assert resp.status_code == 401 and "audience" in resp.json()["error"]


def test_key_rotation_is_followed(keycloak_gateway, keycloak, alice):
    realm_id = keycloak.admin("GET", "").json()["id"]
    keycloak.admin("POST", "/components", json={
        "name": "rotated-rsa", "providerId": "rsa-generated", "providerType": "org.keycloak.keys.KeyProvider",
        "parentId": realm_id, "config": {"priority": ["500"], "algorithm": ["RS256"], "keySize": ["2048"]}})
    fresh = keycloak.service_token()
    old_kid = jwt.get_unverified_header(alice["access_token"])["kid"]
    assert jwt.get_unverified_header(fresh)["kid"] != old_kid
    time.sleep(1.1)  # past the gateway's re-fetch interval for this test gateway
    assert get(keycloak_gateway, fresh).status_code == 200
    assert get(keycloak_gateway, alice["access_token"]).status_code == 200  # the old key is still published


def test_capability_tokens_for_a_keycloak_user(keycloak_gateway, alice):
    headers = {"Authorization": f"Bearer {alice['access_token']}"}
    r = httpx.post(keycloak_gateway + "/api/capabilities", headers=headers, data={
        "title": "script", "read_permission": "true",
        "expiration_time": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()})
    assert r.status_code == 201
    assert get(keycloak_gateway, r.json()["secret"]).status_code == 200


def test_impersonation_by_the_admin_reaches_the_audit_trail(keycloak_gateway, keycloak):
    """The realm's IMPERSONATOR_ID mapper, a real impersonation and the gateway's event log, end to end."""
    user_id = keycloak.create_user("bob", "bob-password-1", "bob@example.org", "Bob", "Builder")
    tokens = keycloak.impersonated_tokens(user_id)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    admin_id = keycloak.master_admin_id()
    assert claims["sub"] == user_id and claims["act"] == {"sub": admin_id}
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    r = httpx.post(keycloak_gateway + "/api/albums", data={"name": "opened by the helpdesk"}, headers=auth, timeout=30)
    assert r.status_code == 201, r.text
    events = httpx.get(keycloak_gateway + f"/api/albums/{r.json()['album_id']}/events", headers=auth, timeout=30)
    event = events.json()[0]
    assert event["mutation_type"] == "CREATE_ALBUM"
    assert event["source"]["sub"] == user_id and event["actor"] == admin_id
    # the user's own login (no impersonation) carries no actor
    own = keycloak.user_tokens("bob", "bob-password-1")
    assert "act" not in jwt.decode(own["access_token"], options={"verify_signature": False})
