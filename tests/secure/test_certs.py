"""Own-certificate validation (no Docker): key match, chain order, SAN host, expiry, the 30-day warning."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from kheopsctl.errors import KheopsError
from kheopsctl.secure import certs
from tests.secure.pki import NOW, make_pki


@pytest.fixture(scope="module")
def pki():
    return make_pki()


def _error(fn, *args, **kw) -> KheopsError:
    with pytest.raises(KheopsError) as info:
        fn(*args, **kw)
    err = info.value
    assert err.exit_code == 2 and err.hint and "\n" not in err.message
    return err


def test_valid_certificate_passes_with_summary(pki, tmp_path):
    leaf = pki.leaf("kheops.example.org")
    chain, key = pki.write(tmp_path, leaf)
    own = certs.validate_own_certificate(chain, key, "kheops.example.org")
    assert [c.serial_number for c in own.chain] == [leaf.cert.serial_number, pki.intermediate.cert.serial_number]
    assert own.summary.subject == "CN=kheops.example.org"
    assert own.summary.issuer == "CN=kheopsctl test intermediate"
    assert 88 <= own.summary.days_left <= 90
    assert own.warnings == []


def test_mismatched_key_is_refused(pki, tmp_path):
    leaf, other = pki.leaf("kheops.example.org"), pki.leaf("kheops.example.org")
    chain, key = pki.write(tmp_path, leaf, key=other)
    err = _error(certs.validate_own_certificate, chain, key, "kheops.example.org")
    assert "does not match the certificate" in err.message


def test_chain_out_of_order_is_refused(pki, tmp_path):
    leaf = pki.leaf("kheops.example.org")
    chain, key = pki.write(tmp_path, leaf, chain=[leaf, pki.root, pki.intermediate])
    err = _error(certs.validate_own_certificate, chain, key, "kheops.example.org")
    assert "certificate 1 (CN=kheops.example.org) is not issued by certificate 2 (CN=kheopsctl test root)" in err.message


def test_wrong_host_is_refused_and_names_listed(pki, tmp_path):
    chain, key = pki.write(tmp_path, pki.leaf("other.example.org", "www.other.example.org"))
    err = _error(certs.validate_own_certificate, chain, key, "kheops.example.org")
    assert "not valid for kheops.example.org" in err.message
    assert "other.example.org, www.other.example.org" in err.message


def test_expired_certificate_is_refused(pki, tmp_path):
    leaf = pki.leaf("kheops.example.org", not_before=NOW - dt.timedelta(days=100), not_after=NOW - dt.timedelta(days=1))
    chain, key = pki.write(tmp_path, leaf)
    err = _error(certs.validate_own_certificate, chain, key, "kheops.example.org")
    assert "expired on" in err.message


def test_not_yet_valid_certificate_is_refused(pki, tmp_path):
    leaf = pki.leaf("kheops.example.org", not_before=NOW + dt.timedelta(days=2))
    chain, key = pki.write(tmp_path, leaf)
    assert "not valid before" in _error(certs.validate_own_certificate, chain, key, "kheops.example.org").message


def test_fewer_than_30_days_warns(pki, tmp_path):
    chain, key = pki.write(tmp_path, pki.leaf("kheops.example.org", not_after=NOW + dt.timedelta(days=12, hours=1)))
    own = certs.validate_own_certificate(chain, key, "kheops.example.org")
    assert len(own.warnings) == 1 and "expires in 12 days" in own.warnings[0]


def test_wildcard_covers_one_label_only(pki):
    leaf = pki.leaf("*.example.org").cert
    assert certs.host_matches(leaf, "kheops.example.org")
    assert not certs.host_matches(leaf, "a.kheops.example.org")
    assert not certs.host_matches(leaf, "example.org")


def test_ip_host_needs_ip_san(pki):
    assert certs.host_matches(pki.leaf("192.0.2.10").cert, "192.0.2.10")
    assert not certs.host_matches(pki.leaf("kheops.example.org").cert, "192.0.2.10")


def test_certificate_without_san_is_refused(pki, tmp_path):
    chain, key = pki.write(tmp_path, pki.leaf())  # CN only: browsers ignore it
    assert "its names: none" in _error(certs.validate_own_certificate, chain, key, "leaf").message


def test_unreadable_inputs(pki, tmp_path):
    assert "not found" in _error(certs.load_chain, tmp_path / "missing.pem").message
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    assert "no PEM certificate" in _error(certs.load_chain, garbage).message
    assert "not a PEM private key" in _error(certs.load_key, garbage).message


def test_passphrase_protected_key_is_explained(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    leaf = pki.leaf("kheops.example.org")
    path = tmp_path / "enc.pem"
    path.write_bytes(leaf.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret-pass")))
    assert "passphrase" in _error(certs.load_key, path).message


def test_self_signed_bootstrap_is_for_the_host():
    cert_pem, key_pem = certs.self_signed("kheops.test")
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert certs.host_matches(cert, "kheops.test")
    assert cert.issuer == cert.subject
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, None)
    certs.check_key_matches(cert, key, "bootstrap")
