"""Registered endpoints as jobs and deliveries need them: read once in a while, not per webhook.

A change made through this process's API is seen at once (the API hands over
the endpoint as written, `changed`); another instance's when the change feed
tells of it (`reload`), or within `CACHE_SECONDS` should that be missed. Deleted
endpoints are found too, so that what is still on its way to one can end
saying why.
"""

from __future__ import annotations

from collections.abc import Callable

from dispatcher.delivery.remembered import Remembered
from dispatcher.store.base import Store
from dispatcher.store.endpoint_records import Endpoint
from dispatcher.store.feed import Change, ChangeFeed, ChangeKind

CACHE_SECONDS = 5.0
# Endpoints remembered at once; past it the memory starts over.
MAX_ENDPOINTS = 10_000


class EndpointBook:
    def __init__(
        self, store: Store, feed: ChangeFeed, cache_seconds: float = CACHE_SECONDS
    ) -> None:
        self._store = store
        self._feed = feed
        self._known: Remembered[str, Endpoint | None] = Remembered(cache_seconds, MAX_ENDPOINTS)
        self._listeners: list[Callable[[Endpoint], None]] = []

    async def get(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint, of whichever tenant, deleted or not; None if it never was."""
        return await self._known.get(endpoint_id, self._read)

    async def _read(self, endpoint_id: str) -> Endpoint | None:
        return await self._store.get_endpoint(endpoint_id, None, deleted=True)

    async def of_tenant(self, endpoint_id: str, tenant: str) -> Endpoint | None:
        """The tenant's own endpoint, not deleted; None for any other (it reveals nothing)."""
        endpoint = await self.get(endpoint_id)
        if endpoint is None or endpoint.tenant != tenant or endpoint.deleted_at is not None:
            return None
        return endpoint

    def changed(self, endpoint: Endpoint) -> None:
        """It was just changed here, to this: keep it, and tell those who keep state
        of it, here and on every other instance."""
        self._tell(endpoint)
        self._feed.publish(Change(ChangeKind.ENDPOINT, endpoint.id, endpoint.tenant))

    async def reload(self, endpoint_id: str) -> None:
        """Another instance changed it: read it again and tell those here who keep state of it."""
        self._known.forget(endpoint_id)
        endpoint = await self.get(endpoint_id)
        if endpoint is not None:
            self._tell(endpoint)

    def refresh(self, endpoint_id: str) -> None:
        """Its health changed by an attempt here (the gate here knows): read it again when
        needed, and tell the other instances."""
        self._known.forget(endpoint_id)
        self._feed.publish(Change(ChangeKind.ENDPOINT, endpoint_id))

    def _tell(self, endpoint: Endpoint) -> None:
        self._known.put(endpoint.id, endpoint)
        for listener in self._listeners:
            listener(endpoint)

    def on_change(self, listener: Callable[[Endpoint], None]) -> None:
        self._listeners.append(listener)
