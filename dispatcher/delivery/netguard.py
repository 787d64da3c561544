"""Keep tenant-supplied callback URLs away from internal addresses.

Two checks, because either alone can be dodged: `check_url` refuses a literal
address at submission (so the tenant hears `422` at once), and the connector's
`socket_factory` refuses whatever address DNS produced at connect time (so a
hostname that resolves, or later re-resolves, to 127.0.0.1 gets nowhere).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohappyeyeballs import AddrInfoType
from yarl import URL

from dispatcher.errors import BlockedAddress

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# inet_aton stops at whitespace and ignores what follows ("1.2.3.4 x"); the
# resolver does not, so only strings made of address characters count.
_IPV4_CHARS = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)
# RFC 6052 well-known NAT64 prefix: DNS64 hands these out for IPv4-only hosts.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# IETF protocol assignments: not globally reachable as a block (RFC 6890), but
# for the two anycast services in it. The standard library of some Python
# versions takes most of the block for global (192.0.0.8, the dummy address).
_PROTOCOL_ASSIGNMENTS = ipaddress.IPv4Network("192.0.0.0/24")
_REACHABLE_ASSIGNMENTS = frozenset(map(ipaddress.IPv4Address, ("192.0.0.9", "192.0.0.10")))

REASON = "not public and not in DISPATCHER_ALLOW_NETWORKS"


class BlockedConnection(OSError):
    """A connection to an address the policy refuses; aiohttp wraps it."""

    def __init__(self, address: object) -> None:
        super().__init__(errno.EACCES, f"blocked address {address}: {REASON}")
        self.address = address

    def __str__(self) -> str:
        # aiohappyeyeballs joins str() of each failed address; keep "[Errno 13]" out.
        return str(self.strerror)


def literal_address(host: str) -> Address | None:
    """The address `host` names if the system resolver would read it as one."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)  # accepts a "%zone" suffix
        except ValueError:
            return None
        # A mapped address connects to the IPv4 host, so judge it as one.
        return address.ipv4_mapped or address
    if not _IPV4_CHARS.fullmatch(host):
        return None
    try:
        # inet_aton, like the resolver, reads 127.1, 0x7f000001, 2130706433, 0177.0.0.1.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


@functools.lru_cache(maxsize=4096)
def _is_public(address: Address) -> bool:
    """Globally reachable and unicast (remembered: the standard library's test is slow)."""
    if isinstance(address, ipaddress.IPv6Address):
        # These carry an IPv4 destination; the wrapper itself looks reserved or global.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return _is_public(embedded)
        if address.is_site_local:
            return False
    elif address in _PROTOCOL_ASSIGNMENTS:
        return address in _REACHABLE_ASSIGNMENTS
    # is_global alone passes multicast (224/4, ff00::/8) and ::/8.
    return address.is_global and not address.is_multicast and not address.is_reserved


MAX_ANSWERS = 4096


class NetworkPolicy:
    """Public addresses, plus the operator's allowed networks; nothing else."""

    def __init__(self, allow: Sequence[Network] = ()) -> None:
        self.allow = tuple(allow)
        # Answers so far, bounded: every submission and connection asks.
        self._answers: dict[Address, bool] = {}

    def allows(self, address: Address) -> bool:
        answer = self._answers.get(address)
        if answer is None:
            if len(self._answers) >= MAX_ANSWERS:
                self._answers.clear()
            answer = self._answers[address] = self._allows(address)
        return answer

    def _allows(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return _is_public(address) or any(address in network for network in self.allow)

    def check_url(self, url: str) -> None:
        """Refuse a URL whose host is a literal address the policy does not allow."""
        # yarl is what aiohttp parses the URL with, so both see the same host.
        host = URL(url).host
        address = literal_address(host) if host else None
        if address is not None and not self.allows(address):
            raise BlockedAddress(f"blocked address {address}: {REASON}", address=str(address))

    def socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        """Create the socket for `addr_info`, after DNS, or refuse its address."""
        family, type_, proto, _, sockaddr = addr_info
        address = literal_address(str(sockaddr[0]))
        # Fail closed: something that is not an address cannot be shown public.
        if address is None or not self.allows(address):
            raise BlockedConnection(address or sockaddr[0])
        return socket.socket(family=family, type=type_, proto=proto)

    def connector(self, **kwargs: Any) -> aiohttp.TCPConnector:
        # socket_factory sees every address, literal or resolved: aiohttp skips
        # its resolver for literal IPs, so a resolver-level guard would miss them.
        return aiohttp.TCPConnector(socket_factory=self.socket_factory, **kwargs)
