"""Where a webhook delivery may go: IPv4 addresses hidden inside IPv6 forms (IPv4-mapped, IPv4-compatible, NAT64,
6to4), Teredo, site-local and the other non-global IPv6 ranges are refused unless listed in
KHEOPS_GW_WEBHOOK_ALLOWED_NETWORKS; checked as properties over generated addresses, at creation (through the real
gateway and PostgreSQL) and before each delivery."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.webhooks import PermanentFailure, address_allowed, check_url, parse_networks, pinned_targets
from tests.gateway.dicomweb.helpers import create_album

V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address
# where an attacker would aim a webhook: the gateway's own host and neighbours
NON_GLOBAL_V4 = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                 "100.64.0.0/10", "0.0.0.0/8", "192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4"]
# public destinations (documented, long-lived allocations)
GLOBAL_V4 = ["8.8.8.0/24", "1.1.1.0/24", "9.9.9.0/24", "93.184.216.0/24", "151.101.0.0/16"]
# IPv6 ranges that are never a destination by default (no IPv4 inside, or one that must not count)
NON_GLOBAL_V6 = ["fec0::/10", "fe80::/10", "fc00::/7", "ff00::/8", "2001::/32", "2001:db8::/32", "64:ff9b:1::/48",
                 "::1/128", "::/128", "100::/64", "5f00::/16", "3fff::/20", "2001:10::/28", "::ffff:0:0:0/96"]


def in_net(cidr: str):
    net = ipaddress.ip_network(cidr)
    return st.integers(int(net.network_address), int(net.broadcast_address)).map(
        V4 if net.version == 4 else V6)


non_global_v4 = st.sampled_from(NON_GLOBAL_V4).flatmap(in_net)
global_v4 = st.sampled_from(GLOBAL_V4).flatmap(in_net)
bits = st.integers(0, 2**80 - 1)


def mapped(v4: V4, _: int) -> V6:
    return V6(0xFFFF << 32 | int(v4))


def compatible(v4: V4, _: int) -> V6:
    return V6(int(v4))


def nat64(v4: V4, _: int) -> V6:
    return V6(0x64FF9B << 96 | int(v4))


def sixtofour(v4: V4, rest: int) -> V6:
    return V6(0x2002 << 112 | int(v4) << 80 | rest)


# the forms through which connecting to the IPv6 address reaches the IPv4 address
TRANSLATED = [mapped, nat64, sixtofour]
EMBEDDINGS = [*TRANSLATED, compatible]


@settings(max_examples=400, deadline=None)
@given(v4=non_global_v4, form=st.sampled_from(EMBEDDINGS), rest=bits)
def test_an_embedded_non_global_ipv4_is_refused(v4, form, rest):
    v6 = form(v4, rest)
    assert not address_allowed(str(v4), [])
    assert not address_allowed(str(v6), []), (form.__name__, str(v6))
    with pytest.raises(ApiError) as err:
        check_url(f"https://[{v6}]:8443/hook", [])
    assert err.value.status == 400


@settings(max_examples=200, deadline=None)
@given(v4=non_global_v4, form=st.sampled_from(EMBEDDINGS), rest=bits, prefix=st.integers(8, 32))
def test_an_embedded_ipv4_in_an_allowed_network_is_allowed(v4, form, rest, prefix):
    assume(form is not compatible or int(v4) > 1)  # :: and ::1 are not IPv4-compatible addresses
    allowed = [ipaddress.ip_network(f"{v4}/{prefix}", strict=False)]
    assert address_allowed(str(form(v4, rest)), allowed)
    # the allowance is for that network only: an embedded address outside it is still refused
    outside = V4(int(v4) ^ (1 << (32 - prefix)))
    if not any(outside in ipaddress.ip_network(n) for n in GLOBAL_V4) and not outside.is_global:
        assert not address_allowed(str(form(outside, rest)), allowed)


@settings(max_examples=200, deadline=None)
@given(v4=global_v4, form=st.sampled_from(TRANSLATED), rest=bits)
def test_an_embedded_public_ipv4_is_allowed(v4, form, rest):
    assert address_allowed(str(form(v4, rest)), [])


@settings(max_examples=100, deadline=None)
@given(v4=global_v4)
def test_the_deprecated_ipv4_compatible_form_is_never_a_default_destination(v4):
    assert not address_allowed(str(compatible(v4, 0)), [])


@settings(max_examples=400, deadline=None)
@given(address=st.sampled_from(NON_GLOBAL_V6).flatmap(in_net))
def test_non_global_ipv6_is_refused_unless_listed(address):
    assert not address_allowed(str(address), [])
    assert not address_allowed(str(address), parse_networks("0.0.0.0/0"))  # IPv4 allowances do not leak
    own = next(n for n in NON_GLOBAL_V6 if address in ipaddress.ip_network(n))
    assert address_allowed(str(address), parse_networks(own))


@settings(max_examples=200, deadline=None)
@given(server=global_v4, client=non_global_v4, flags=st.integers(0, 0xFFFF), port=st.integers(0, 0xFFFF))
def test_teredo_is_refused_whatever_it_embeds(server, client, flags, port):
    teredo = V6(0x20010000 << 96 | int(server) << 64 | flags << 48 | port << 32 | (int(client) ^ 0xFFFFFFFF))
    assert teredo.teredo is not None
    assert not address_allowed(str(teredo), [])
    assert not address_allowed(str(teredo), [ipaddress.ip_network(f"{client}/32")])


def test_global_unicast_ipv6_is_allowed_and_zone_ids_do_not_hide_link_local():
    for public in ("2606:4700:4700::1111", "2a00:1450:4007:80e::200e", "2620:fe::fe"):
        assert address_allowed(public, [])
    assert not address_allowed("fe80::1%eth0", [])
    assert address_allowed("fe80::1%eth0", parse_networks("fe80::/10"))


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0x7f.1", "127.1", "017700000001", "10.1",
                                  "0251.0376.0251.0376"])
def test_legacy_ipv4_spellings_are_checked_as_addresses(host):
    # the resolver reads these as IPv4 addresses (loopback, 10.0.0.1, 169.254.169.254)
    with pytest.raises(ApiError):
        check_url(f"http://{host}/hook", [])


@pytest.mark.parametrize("literal", ["::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:a00:1::1", "::127.0.0.1",
                                     "fec0::1", "64:ff9b:1::a00:1"])
def test_delivery_refuses_an_embedded_address_already_stored(literal):
    """A URL stored before this check (or by hand) is refused again at delivery, after resolution."""
    with pytest.raises(PermanentFailure):
        asyncio.run(pinned_targets(f"http://[{literal}]:9/hook", []))


@pytest.mark.parametrize("host", ["[::ffff:169.254.169.254]", "[64:ff9b::7f00:1]", "[2002:c0a8:101::1]",
                                  "[::10.0.0.1]", "[fec0::1]", "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
                                  "2130706433"])
def test_the_api_refuses_embedded_destinations(make_user, host):
    alice = make_user("alice")
    album = create_album(alice)
    r = alice.client.post(f"/albums/{album}/webhooks", data={
        "name": "hook", "url": f"http://{host}/hook", "events": "new_series", "secret": "s" * 32})
    assert r.status_code == 400, r.text
    assert "not allowed" in r.json()["error"]
    assert alice.client.get(f"/albums/{album}/webhooks").json() == []
