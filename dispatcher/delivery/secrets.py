"""What signs each webhook: its endpoint's live secrets (with its headers), or its tenant's.

Each tenant's live signing secrets are read once in a while.

Reading them from the store for every webhook cost a database round trip per
attempt. They change only by rotation, which goes through here on this
process and takes effect at once; another instance sees it within
`CACHE_SECONDS`, while the grace period still honours the old secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dispatcher.delivery.endpoints import EndpointBook
from dispatcher.delivery.remembered import Remembered
from dispatcher.ids import now
from dispatcher.store.base import Store
from dispatcher.store.feed import Change, ChangeFeed, ChangeKind
from dispatcher.store.records import Delivery
from dispatcher.store.signing import SigningSecrets

CACHE_SECONDS = 5.0
# Tenants remembered at once; past it the memory starts over.
MAX_TENANTS = 10_000


class TenantSecrets:
    def __init__(
        self, store: Store, feed: ChangeFeed, cache_seconds: float = CACHE_SECONDS
    ) -> None:
        self._store = store
        self._feed = feed
        self._known: Remembered[str, SigningSecrets | None] = Remembered(cache_seconds, MAX_TENANTS)

    async def for_delivery(self, delivery: Delivery) -> list[str]:
        """The secrets to sign `delivery` with, newest first; none if its tenant has none."""
        secrets = await self._known.get(delivery.tenant, self._store.tenant_secrets)
        return secrets.active(now()) if secrets else []

    async def rotate(self, tenant: str, new_secret: str, grace_until: float) -> SigningSecrets:
        secrets = await self._store.rotate_tenant_secret(tenant, new_secret, grace_until, now())
        self._feed.publish(Change(ChangeKind.TENANT_SECRETS, tenant))
        return secrets

    def forget(self, tenant: str) -> None:
        """Its secrets changed (here or on another instance): read them again when needed."""
        self._known.forget(tenant)


@dataclass(frozen=True, slots=True)
class Signing:
    """The secrets one webhook is signed with, newest first, the headers it adds, and
    where it goes if not to its own target (an endpoint that was pointed elsewhere)."""

    secrets: list[str]
    headers: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None


class Signers:
    def __init__(self, tenants: TenantSecrets, endpoints: EndpointBook) -> None:
        self._tenants = tenants
        self._endpoints = endpoints

    async def for_delivery(self, delivery: Delivery) -> Signing:
        if delivery.endpoint_id is None:
            return Signing(await self._tenants.for_delivery(delivery))
        endpoint = await self._endpoints.get(delivery.endpoint_id)
        if endpoint is None:
            return Signing([])
        return Signing(endpoint.secrets.active(now()), endpoint.headers, endpoint.url)
