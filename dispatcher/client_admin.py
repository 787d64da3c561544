"""The client's methods that set a dispatcher up rather than run work: API keys and endpoints.

`Client` (in `dispatcher.client`) inherits them; use them from there. The small
request helpers both modules share live here, so that neither imports the other
in a circle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _segment(value: str) -> str:
    # Ids go into the path; quoting keeps a stray "/" or "?" from reaching another route.
    # An id typed on a terminal that is not UTF-8 still reaches the server, as its bytes.
    return quote(str(value), safe="", errors="surrogateescape")


def _page(limit: int | None, cursor: str | None) -> dict[str, str]:
    given = _drop_none({"limit": limit, "cursor": cursor})
    return {name: str(value) for name, value in given.items()}


class AdminMixin:
    """API keys (an admin's) and endpoints (each tenant's own; an admin's reach every tenant's)."""

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError  # Client's: one request, its JSON answer or an ApiError

    # Keys

    async def create_key(self, tenant: str, admin: bool = False) -> dict[str, Any]:
        """A new API key (admin only): `{"key", "tenant", "admin", "signing_secret"}`."""
        return await self._request("POST", "/v1/keys", json={"tenant": tenant, "admin": admin})

    async def list_keys(
        self, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of API keys (admin only), each without its secret part: its `prefix`."""
        return await self._request("GET", "/v1/keys", params=_page(limit, cursor))

    async def revoke_key(self, prefix: str) -> None:
        """Revoke the key that `prefix` names (admin only); streams opened with it close."""
        await self._request("DELETE", f"/v1/keys/{_segment(prefix)}")

    # Endpoints

    async def create_endpoint(
        self,
        url: str,
        *,
        description: str | None = None,
        headers: Mapping[str, str] | None = None,
        event_types: Sequence[str] | None = None,
        signature: str | None = None,
        rate_limit: int | None = None,
        max_in_flight: int | None = None,
    ) -> dict[str, Any]:
        """A new endpoint, with the `secret` (hmac) or `public_key` (ed25519) it signs with.

        The secret is shown only here and by `rotate_endpoint_secret`."""
        body = {"url": url} | _drop_none(
            {
                "description": description,
                "headers": dict(headers) if headers is not None else None,
                "event_types": list(event_types) if event_types is not None else None,
                "signature": signature,
                "rate_limit": rate_limit,
                "max_in_flight": max_in_flight,
            }
        )
        return await self._request("POST", "/v1/endpoints", json=body)

    async def list_endpoints(
        self, limit: int | None = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of endpoints, newest first: `{"items", "next_cursor"}`."""
        return await self._request("GET", "/v1/endpoints", params=_page(limit, cursor))

    async def endpoints(self, limit: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every endpoint, newest first, page after page (`limit` a page's size)."""
        cursor = None
        while True:
            page = await self.list_endpoints(limit, cursor)
            for item in page["items"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def get_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v1/endpoints/{_segment(endpoint_id)}")

    async def update_endpoint(self, endpoint_id: str, **changes: Any) -> dict[str, Any]:
        """Change exactly the fields given: `url`, `description`, `headers`, `event_types`,
        `rate_limit`, `max_in_flight` (None clears these five) and `disabled`."""
        path = f"/v1/endpoints/{_segment(endpoint_id)}"
        return await self._request("PATCH", path, json=changes)

    async def enable_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        """Re-enable a disabled endpoint (its circuit closes too)."""
        return await self.update_endpoint(endpoint_id, disabled=False)

    async def rotate_endpoint_secret(self, endpoint_id: str) -> dict[str, Any]:
        """A new `secret` (or ed25519 `public_key`); the old one still signs during the grace."""
        path = f"/v1/endpoints/{_segment(endpoint_id)}/rotate-secret"
        return await self._request("POST", path)

    async def endpoint_public_key(self, endpoint_id: str) -> str:
        """An ed25519 endpoint's `whpk_…` public key (an hmac endpoint's is a 409 ApiError)."""
        path = f"/v1/endpoints/{_segment(endpoint_id)}/public-key"
        answer = await self._request("GET", path)
        key = answer.get("public_key") if isinstance(answer, dict) else None
        if not isinstance(key, str):
            from dispatcher.client import ClientError  # here: that module imports this one

            raise ClientError(f"GET {path}: the answer has no public_key")
        return key

    async def delete_endpoint(self, endpoint_id: str) -> None:
        await self._request("DELETE", f"/v1/endpoints/{_segment(endpoint_id)}")
