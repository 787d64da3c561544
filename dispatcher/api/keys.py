"""API keys (admin only) and the tenant's default signing secret."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.answers import json_answer
from dispatcher.api.authn import require_admin
from dispatcher.api.context import principal, services
from dispatcher.api.parsing import body, decode_cursor, page_body, query
from dispatcher.auth import new_key
from dispatcher.errors import NotFound
from dispatcher.ids import now
from dispatcher.models import KeyRequest, ListQuery
from dispatcher.store.feed import Change, ChangeKind
from dispatcher.store.rows import valid_key_cursor
from dispatcher.webhooks import generate_secret

routes = web.RouteTableDef()


@routes.post("/v1/keys")
async def create(request: web.Request) -> web.Response:
    svc = services(request)
    require_admin(principal(request))
    spec, _ = await body(request, KeyRequest, svc.settings.max_body_bytes)
    key, record = new_key(spec.tenant, spec.admin)
    secrets = await svc.store.create_key(record, generate_secret())
    answer = {
        "key": key,
        "tenant": record.tenant,
        "admin": record.admin,
        "signing_secret": secrets.current,
    }
    return json_answer(answer, status=201)


@routes.get("/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    svc = services(request)
    require_admin(principal(request))
    params = query(request, ListQuery)
    before = decode_cursor(params.cursor, valid_key_cursor)
    page = await svc.store.list_keys(params.limit, before)
    return json_answer(page_body([k.public() for k in page.items], page.next_cursor))


@routes.delete("/v1/keys/{prefix}")
async def revoke(request: web.Request) -> web.Response:
    svc = services(request)
    require_admin(principal(request))
    prefix = request.match_info["prefix"]
    if not await svc.store.revoke_key(prefix):
        raise NotFound(f"no key with prefix {prefix}")
    # Its cached principal and its streams end here and on every other instance.
    svc.feed.publish(Change(ChangeKind.KEY_REVOKED, prefix))
    return web.Response(status=204)


@routes.get("/v1/signing-secret")
async def signing_secret(request: web.Request) -> web.Response:
    svc = services(request)
    secrets = await svc.store.tenant_secrets(principal(request).tenant)
    if secrets is None:
        raise NotFound("the tenant has no signing secret")
    return json_answer({"secret": secrets.current})


@routes.post("/v1/signing-secret/rotate")
async def rotate_signing_secret(request: web.Request) -> web.Response:
    svc = services(request)
    grace_until = now() + svc.settings.rotation_grace
    secrets = await svc.secrets.rotate(principal(request).tenant, generate_secret(), grace_until)
    return json_answer({"secret": secrets.current})
