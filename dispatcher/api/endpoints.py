"""Endpoints: register a callback URL once, with its own secret, headers, filter and limits."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from yarl import URL

from dispatcher.api.answers import json_answer
from dispatcher.api.context import Services, principal, services
from dispatcher.api.parsing import body, decode_cursor, page_body, query
from dispatcher.errors import Conflict, Invalid, NotFound
from dispatcher.ids import is_id, new_id, now
from dispatcher.models import EndpointPatch, EndpointRequest, ListQuery
from dispatcher.store.endpoint_records import (
    Endpoint,
    EndpointChanges,
    NewEndpoint,
    Signature,
)
from dispatcher.store.records import Channel, delivery_host
from dispatcher.webhooks import generate_secret, generate_signing_key, public_key_of

routes = web.RouteTableDef()


def _checked_url(svc: Services, url: str) -> str:
    try:
        svc.network.check_url(url)
    except Exception as exc:
        message = str(exc)
        raise Invalid(
            message, [{"field": "url", "message": message, "type": "value_error"}]
        ) from exc
    return url


def _one_authorization(url: str, headers: dict[str, str] | None) -> None:
    """A user and password in the URL are sent as an Authorization header: not both."""
    if URL(url).user is not None and "authorization" in {h.lower() for h in headers or {}}:
        message = "give credentials in the URL or an Authorization header, not both"
        raise Invalid(message, [{"field": "headers", "message": message, "type": "value_error"}])


def _new_secret(signature: Signature) -> str:
    return generate_signing_key()[0] if signature is Signature.ED25519 else generate_secret()


def _credential(endpoint: Endpoint) -> dict[str, str]:
    """What a receiver verifies with: the shared secret, or the public key alone."""
    if endpoint.signature is Signature.ED25519:
        return {"public_key": public_key_of(endpoint.secrets.current)}
    return {"secret": endpoint.secrets.current}


def _scope(request: web.Request, change: bool) -> str | None:
    """Whose endpoints a key reaches: an admin reads every tenant's, but changes only its
    own (a rotation would hand it another tenant's secret, a new URL its webhooks)."""
    who = principal(request)
    return who.tenant if change else who.scope()


async def _find(request: web.Request, *, change: bool = False) -> Endpoint:
    endpoint_id = request.match_info["id"]
    found = None
    if is_id(endpoint_id, "ep"):
        found = await services(request).store.get_endpoint(endpoint_id, _scope(request, change))
    if found is None:
        raise NotFound(f"no endpoint {endpoint_id}")
    return found


@routes.post("/v1/endpoints")
async def create(request: web.Request) -> web.Response:
    svc = services(request)
    spec, _ = await body(request, EndpointRequest, svc.settings.max_body_bytes)
    _one_authorization(spec.url, spec.headers)
    signature = Signature(spec.signature)
    endpoint = await svc.store.create_endpoint(
        NewEndpoint(
            id=new_id("ep"),
            tenant=principal(request).tenant,
            url=_checked_url(svc, spec.url),
            host=delivery_host(Channel.WEBHOOK, spec.url),
            description=spec.description,
            headers=spec.headers,
            event_types=tuple(spec.event_types) if spec.event_types is not None else None,
            signature=signature,
            secret=_new_secret(signature),
            rate_limit=spec.rate_limit,
            max_in_flight=spec.max_in_flight,
            created_at=now(),
        ),
        svc.settings.max_endpoints_per_tenant,
    )
    answer = {**endpoint.public(), **_credential(endpoint)}
    return json_answer(answer, status=201, headers={"Location": f"/v1/endpoints/{endpoint.id}"})


@routes.get("/v1/endpoints")
async def list_endpoints(request: web.Request) -> web.Response:
    svc = services(request)
    params = query(request, ListQuery)
    before = decode_cursor(params.cursor, lambda value: is_id(value, "ep"))
    page = await svc.store.list_endpoints(principal(request).scope(), params.limit, before)
    return json_answer(page_body([e.public() for e in page.items], page.next_cursor))


@routes.get("/v1/endpoints/{id}")
async def show(request: web.Request) -> web.Response:
    return json_answer((await _find(request)).public())


@routes.patch("/v1/endpoints/{id}")
async def update(request: web.Request) -> web.Response:
    svc = services(request)
    who = principal(request)
    spec, _ = await body(request, EndpointPatch, svc.settings.max_body_bytes)
    endpoint = await _find(request, change=True)
    changes = _changes(svc, spec, who.prefix)
    _one_authorization(
        changes.values.get("url", endpoint.url), changes.values.get("headers", endpoint.headers)
    )
    updated = await svc.store.update_endpoint(endpoint.id, who.tenant, changes, now())
    if updated is None:
        raise NotFound(f"no endpoint {endpoint.id}")
    svc.endpoints.changed(updated)
    return json_answer(updated.public())


def _changes(svc: Services, spec: EndpointPatch, by: str) -> EndpointChanges:
    given = spec.model_fields_set
    values: dict[str, Any] = {}
    for field in ("description", "headers", "event_types", "rate_limit", "max_in_flight"):
        if field in given:
            values[field] = getattr(spec, field)
    host = None
    if "url" in given:
        if spec.url is None:
            raise Invalid("url cannot be null", [_null("url")])
        values["url"] = _checked_url(svc, spec.url)
        host = delivery_host(Channel.WEBHOOK, spec.url)
    if "headers" in given and spec.headers is None:
        values["headers"] = {}
    disabled = spec.disabled if "disabled" in given else None
    if "disabled" in given and disabled is None:
        raise Invalid("disabled cannot be null", [_null("disabled")])
    return EndpointChanges(
        values,
        host=host,
        enable=disabled is False,
        disable_reason=f"disabled by key {by}" if disabled else None,
    )


def _null(field: str) -> dict[str, str]:
    return {"field": field, "message": "cannot be null", "type": "value_error"}


@routes.delete("/v1/endpoints/{id}")
async def delete(request: web.Request) -> web.Response:
    svc = services(request)
    endpoint = await _find(request, change=True)
    if not await svc.store.delete_endpoint(endpoint.id, principal(request).tenant, now()):
        raise NotFound(f"no endpoint {endpoint.id}")
    deleted = await svc.store.get_endpoint(endpoint.id, None, deleted=True)
    if deleted is not None:
        svc.endpoints.changed(deleted)
    return web.Response(status=204)


@routes.post("/v1/endpoints/{id}/rotate-secret")
async def rotate(request: web.Request) -> web.Response:
    svc = services(request)
    endpoint = await _find(request, change=True)
    at = now()
    rotated = await svc.store.rotate_endpoint_secret(
        endpoint.id,
        principal(request).tenant,
        _new_secret(endpoint.signature),
        at + svc.settings.rotation_grace,
        at,
    )
    if rotated is None:
        raise NotFound(f"no endpoint {endpoint.id}")
    svc.endpoints.changed(rotated)
    return json_answer(_credential(rotated))


@routes.get("/v1/endpoints/{id}/public-key")
async def public_key(request: web.Request) -> web.Response:
    endpoint = await _find(request)
    if endpoint.signature is not Signature.ED25519:
        raise Conflict("this endpoint signs with a shared HMAC secret; it has no public key")
    return json_answer(_credential(endpoint))
