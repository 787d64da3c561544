"""Deliveries: list, show with attempts, replay one or many."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dispatcher.api.answers import json_answer
from dispatcher.api.context import Services, principal, services
from dispatcher.api.parsing import body, decode_cursor, page_body, query
from dispatcher.errors import Conflict, NotFound
from dispatcher.ids import is_id, now, rfc3339
from dispatcher.models import BulkReplayRequest, DeliveryListQuery, timestamp
from dispatcher.store.feed import Change, ChangeKind
from dispatcher.store.records import Channel, Delivery, DeliveryFilter, DeliveryStatus

routes = web.RouteTableDef()


@routes.get("/v1/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    svc = services(request)
    params = query(request, DeliveryListQuery)
    where = DeliveryFilter(
        tenant=principal(request).scope(),
        status=DeliveryStatus(params.status) if params.status else None,
        job_id=params.job_id,
        endpoint_id=params.endpoint_id,
        channel=Channel(params.channel) if params.channel else None,
        since=timestamp(params.since),
        until=timestamp(params.until),
        limit=params.limit,
        before=decode_cursor(params.cursor, lambda value: is_id(value, "msg")),
    )
    page = await svc.store.list_deliveries(where)
    return json_answer(page_body([await _shown(svc, d) for d in page.items], page.next_cursor))


@routes.get("/v1/deliveries/{id}")
async def show(request: web.Request) -> web.Response:
    svc = services(request)
    delivery_id = request.match_info["id"]
    found = None
    if is_id(delivery_id, "msg"):
        found = await svc.store.get_delivery(delivery_id, principal(request).scope())
    if found is None:
        raise NotFound(f"no delivery {delivery_id}")
    return json_answer(await _shown(svc, found))


async def _shown(svc: Services, delivery: Delivery) -> dict[str, Any]:
    """The delivery as the API shows it: one waiting behind its endpoint's open circuit
    says when it will be tried, which is no sooner than the circuit's next probe."""
    body = delivery.public()
    if delivery.status is DeliveryStatus.PENDING and delivery.endpoint_id is not None:
        endpoint = await svc.endpoints.get(delivery.endpoint_id)
        probe_at = endpoint.health.probe_at if endpoint and endpoint.health.open else None
        if probe_at is not None and probe_at > (delivery.next_attempt_at or 0):
            body["next_attempt_at"] = rfc3339(probe_at)
    return body


@routes.post("/v1/deliveries/replay")
async def replay_many(request: web.Request) -> web.Response:
    svc = services(request)
    who = principal(request)
    spec, _ = await body(request, BulkReplayRequest, svc.settings.max_body_bytes)
    where = DeliveryFilter(
        tenant=who.scope(),
        status=DeliveryStatus(spec.status),
        endpoint_id=spec.endpoint_id,
        channel=Channel(spec.channel) if spec.channel else None,
        since=timestamp(spec.since),
        until=timestamp(spec.until),
    )
    count = await svc.store.replay_deliveries(where, who.prefix, now(), spec.dry_run)
    if spec.dry_run:
        return json_answer({"matched": count})
    svc.feed.publish(Change(ChangeKind.DELIVERIES_DUE))
    return json_answer({"replayed": count}, status=202)


@routes.post("/v1/deliveries/{id}/replay")
async def replay_one(request: web.Request) -> web.Response:
    svc = services(request)
    who = principal(request)
    delivery_id = request.match_info["id"]
    if not is_id(delivery_id, "msg"):
        raise NotFound(f"no delivery {delivery_id}")
    found = await svc.store.get_delivery(delivery_id, who.scope())
    if found is not None and found.endpoint_id is not None:
        endpoint = await svc.store.get_endpoint(found.endpoint_id, None, deleted=True)
        unusable = endpoint.unusable() if endpoint is not None else None
        if unusable is not None:
            raise Conflict(f"{unusable}; it can be replayed once the endpoint is enabled")
    delivery = await svc.store.replay_delivery(delivery_id, who.scope(), who.prefix, now())
    svc.feed.publish(Change(ChangeKind.DELIVERIES_DUE))
    return json_answer(delivery.public(), status=202)
