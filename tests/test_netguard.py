"""The network guard: literal addresses at submission, resolved ones at connect time.

Traffic goes only to loopback. Other non-public addresses are classified as
values (nothing is sent); refusal at connect time is shown with loopback and
an empty allow list.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable, Callable
from ipaddress import ip_address, ip_network

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dispatcher.delivery.netguard import BlockedConnection, NetworkPolicy, literal_address
from dispatcher.errors import BlockedAddress

LOOPBACK = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
BLOCKED_LOOPBACK = re.compile(
    r"blocked address (127\.0\.0\.1|::1): not public and not in DISPATCHER_ALLOW_NETWORKS"
)


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    return await aiohttp_server(app)  # binds 127.0.0.1 on a free port


async def fetch(policy: NetworkPolicy, url: str) -> int:
    async with (
        aiohttp.ClientSession(connector=policy.connector()) as session,
        session.get(url) as response,
    ):
        return response.status


# --- literal_address -------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "0x7f000001",
        "0X7F.1",
        "2130706433",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
        "::ffff:7f00:1",
    ],
)
def test_resolver_forms_of_loopback_are_literal_127_0_0_1(host: str) -> None:
    assert literal_address(host) == ip_address("127.0.0.1")


def test_bracketed_ipv6_is_literal() -> None:
    assert literal_address("[::1]") == ip_address("::1")


def test_ipv6_zone_id_is_kept_and_still_link_local() -> None:
    address = literal_address("[fe80::1%eth0]")
    assert address is not None
    assert address.is_link_local


@pytest.mark.parametrize(
    "host",
    ["localhost", "example.com", "deadbeef", "127.0.0.1.example.com", "1.2.3.4 x", ""],
)
def test_hostnames_are_not_literal(host: str) -> None:
    assert literal_address(host) is None


# --- NetworkPolicy.allows ----------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_is_refused_without_allow_list(address: str) -> None:
    assert not NetworkPolicy().allows(ip_address(address))


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_is_allowed_by_allow_list(address: str) -> None:
    assert NetworkPolicy(LOOPBACK).allows(ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "ff0e::1",
        "::7f00:1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",
        "2002:a00:1::",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not NetworkPolicy().allows(ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert NetworkPolicy().allows(ip_address(address))


def test_allow_list_allows_only_its_networks() -> None:
    assert not NetworkPolicy(LOOPBACK).allows(ip_address("10.0.0.1"))


# --- check_url (submission) -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "named"),
    [("http://127.1:8080/x", "127.0.0.1"), ("http://[::ffff:127.0.0.1]/", "127.0.0.1")],
)
def test_check_url_refuses_literal_loopback_naming_it(url: str, named: str) -> None:
    with pytest.raises(BlockedAddress, match=f"blocked address {re.escape(named)}") as exc:
        NetworkPolicy().check_url(url)
    assert exc.value.status == 422


@pytest.mark.parametrize("url", ["http://127.1:8080/x", "http://[::ffff:127.0.0.1]/"])
def test_check_url_passes_literal_loopback_when_allowed(url: str) -> None:
    NetworkPolicy(LOOPBACK).check_url(url)


@pytest.mark.parametrize("url", ["http://localhost:8080/x", "https://example.com/hook"])
def test_check_url_leaves_hostnames_to_connect_time(url: str) -> None:
    NetworkPolicy().check_url(url)


# --- socket_factory and connector (connect time) ------------------------------


def test_socket_factory_refuses_blocked_address_without_a_socket() -> None:
    addr_info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80))
    with pytest.raises(BlockedConnection, match=BLOCKED_LOOPBACK):
        NetworkPolicy().socket_factory(addr_info)


def test_socket_factory_creates_socket_for_allowed_address() -> None:
    addr_info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80))
    with NetworkPolicy(LOOPBACK).socket_factory(addr_info) as sock:
        assert (sock.family, sock.type) == (socket.AF_INET, socket.SOCK_STREAM)


async def test_connector_passes_options_through() -> None:
    connector = NetworkPolicy().connector(limit=7)
    try:
        assert connector.limit == 7
    finally:
        await connector.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_connect_to_blocked_address_fails_naming_it(receiver: TestServer, host: str) -> None:
    with pytest.raises(aiohttp.ClientConnectorError) as exc:
        await fetch(NetworkPolicy(), f"http://{host}:{receiver.port}/")
    assert isinstance(exc.value.os_error, BlockedConnection)
    assert BLOCKED_LOOPBACK.search(str(exc.value))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_connect_to_allowed_address_succeeds(receiver: TestServer, host: str) -> None:
    assert await fetch(NetworkPolicy(LOOPBACK), f"http://{host}:{receiver.port}/") == 200
