"""Properties, over inputs hypothesis makes up: signatures round-trip and catch any change,
Retry-After reads as a receiver meant it, and the address guard agrees with a reference
table of the networks that are not public (RFC 6890 and its IANA registries)."""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.delivery.netguard import NetworkPolicy, literal_address
from dispatcher.delivery.webhook import parse_retry_after
from dispatcher.webhooks import (
    WebhookVerificationError,
    generate_signing_key,
    public_key_of,
    sign,
    verify,
)

NOW = 1_800_000_000
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
msg_ids = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)
hmac_secrets = st.binary(min_size=1, max_size=64).map(
    lambda raw: "whsec_" + base64.b64encode(raw).decode()
)


@settings(max_examples=200)
@given(secret=hmac_secrets, msg_id=msg_ids, payload=json_values, skew=st.integers(-300, 300))
def test_what_is_signed_verifies_and_gives_the_body_back(secret, msg_id, payload, skew):
    body = json.dumps(payload).encode()
    headers = sign(secret, msg_id, NOW + skew, body)
    assert verify(secret, headers, body, now=NOW) == payload


@settings(max_examples=200)
@given(secret=hmac_secrets, payload=json_values, flip=st.integers(0, 10_000))
def test_any_changed_byte_fails_verification(secret, payload, flip):
    body = bytearray(json.dumps({"data": payload}).encode())
    headers = sign(secret, "msg_1", NOW, bytes(body))
    body[flip % len(body)] ^= 1 << (flip % 8)
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, bytes(body), now=NOW)


@settings(max_examples=50)
@given(payload=json_values, rotated=st.integers(1, 9))
def test_ed25519_signatures_verify_with_each_live_public_key_alone(payload, rotated):
    keys = [generate_signing_key()[0] for _ in range(rotated)]
    body = json.dumps(payload).encode()
    headers = sign(keys, "msg_1", NOW, body)
    for private in keys:
        assert verify(public_key_of(private), headers, body, now=NOW) == payload
    with pytest.raises(WebhookVerificationError):
        verify(generate_signing_key()[1], headers, body, now=NOW)


@given(st.integers(0, 10**12))
def test_retry_after_seconds_read_as_given(seconds):
    assert parse_retry_after(str(seconds)) == seconds
    assert parse_retry_after(f"  {seconds} ") == seconds


@given(st.integers(0, 10 * 365 * 86_400))
def test_retry_after_http_dates_read_as_the_time_until_then(ahead):
    when = time.time() + ahead
    parsed = parse_retry_after(email.utils.formatdate(when, usegmt=True))
    assert parsed is not None and abs(parsed - ahead) <= 2


@given(st.integers(1, 10 * 365 * 86_400))
def test_a_past_http_date_means_now(ago):
    assert parse_retry_after(email.utils.formatdate(time.time() - ago, usegmt=True)) == 0


@given(st.text(max_size=40))
def test_retry_after_never_raises_and_is_never_negative(text):
    parsed = parse_retry_after(text)
    assert parsed is None or parsed >= 0


# The reference: networks that are not globally reachable unicast, from the IANA
# special-purpose registries, less the few entries in them marked reachable.
NOT_PUBLIC_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
]  # fmt: skip
REACHABLE_EXCEPTIONS_V4 = [ipaddress.IPv4Network(n) for n in ("192.0.0.9/32", "192.0.0.10/32")]
NOT_PUBLIC_V6 = [
    ipaddress.IPv6Network(n)
    for n in (
        "::/128", "::1/128", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10",
        "fec0::/10", "ff00::/8",
    )
]  # fmt: skip


def reference_allows_v4(address: ipaddress.IPv4Address) -> bool:
    if any(address in network for network in REACHABLE_EXCEPTIONS_V4):
        return True
    return not any(address in network for network in NOT_PUBLIC_V4)


@settings(max_examples=2000)
@given(st.ip_addresses(v=4))
def test_the_guard_agrees_with_the_reference_on_every_ipv4_spelling(address):
    policy = NetworkPolicy()
    expected = reference_allows_v4(address)
    spellings = [str(address), str(int(address)), hex(int(address)), f"::ffff:{address}"]
    for spelling in spellings:
        found = literal_address(spelling)
        assert found == address, spelling
        assert policy.allows(found) is expected, spelling


@settings(max_examples=500)
@given(st.sampled_from(NOT_PUBLIC_V4).flatmap(lambda network: st.ip_addresses(network=network)))
def test_every_address_of_a_listed_ipv4_network_is_refused(address):
    if not reference_allows_v4(address):
        assert not NetworkPolicy().allows(address)


@settings(max_examples=500)
@given(st.sampled_from(NOT_PUBLIC_V6).flatmap(lambda network: st.ip_addresses(network=network)))
def test_every_address_of_a_listed_ipv6_network_is_refused(address):
    assert not NetworkPolicy().allows(address)


@settings(max_examples=500)
@given(st.ip_addresses(network="2400::/6"))
def test_global_unicast_ipv6_is_allowed(address):
    assert NetworkPolicy().allows(address)


@settings(max_examples=300)
@given(st.ip_addresses(v=4).filter(lambda a: not reference_allows_v4(a)))
def test_an_allowed_network_lets_its_own_addresses_through_and_no_other(address):
    network = ipaddress.IPv4Network(f"{address}/24", strict=False)
    policy = NetworkPolicy([network])
    assert policy.allows(address)
    outside = ipaddress.IPv4Address((int(address) + 256) % 2**32)
    assert policy.allows(outside) is reference_allows_v4(outside)
