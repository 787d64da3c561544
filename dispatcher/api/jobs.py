"""Jobs: submit, read (with long-poll), list, cancel."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from dispatcher.api.answers import json_answer
from dispatcher.api.context import Services, principal, services
from dispatcher.api.parsing import decode_cursor, page_body, query, read_json, validate
from dispatcher.errors import Conflict, Invalid, NotFound, Unauthorized
from dispatcher.events import Ending
from dispatcher.ids import is_id, new_id, now
from dispatcher.models import JobListQuery, JobRequest, WaitQuery, timestamp
from dispatcher.store.records import Job, JobFilter, JobStatus, NewJob

routes = web.RouteTableDef()

MAX_IDEMPOTENCY_KEY = 255


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, [{"field": field, "message": message, "type": "value_error"}])


async def _check_targets(request: JobRequest, svc: Services, tenant: str) -> None:
    if request.callback_url is not None and request.endpoint_id is not None:
        raise _invalid("endpoint_id", "give callback_url or endpoint_id, not both")
    if svc.registry.get(request.type) is None:
        raise _invalid("type", f"unknown job type {request.type!r}; known: {svc.registry.names()}")
    if request.callback_url is not None:
        try:
            svc.network.check_url(request.callback_url)
        except Exception as exc:
            raise _invalid("callback_url", str(exc)) from exc
    if request.endpoint_id is not None and (
        not is_id(request.endpoint_id, "ep")
        or await svc.endpoints.of_tenant(request.endpoint_id, tenant) is None
    ):
        # Another tenant's endpoint is not found either: its existence is not told.
        raise _invalid("endpoint_id", f"no endpoint {request.endpoint_id!r}")


def _request_hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (
        0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isascii() and key.isprintable()
    ):
        raise _invalid(
            "Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        )
    return key


def job_response(
    job: Job, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return json_answer(job.public(), status=status, headers=headers)


@routes.post("/v1/jobs")
async def submit(request: web.Request) -> web.Response:
    svc = services(request)
    who = principal(request)
    data, _ = await read_json(request, svc.settings.max_body_bytes)
    idempotency_key = _idempotency_key(request)
    spec = validate(JobRequest, data)
    await _check_targets(spec, svc, who.tenant)
    new = NewJob(
        id=new_id("job"),
        tenant=who.tenant,
        type=spec.type,
        payload=spec.payload,
        callback_url=spec.callback_url,
        endpoint_id=spec.endpoint_id,
        notify=spec.notify.model_dump(exclude_none=True) if spec.notify else None,
        metadata=spec.metadata,
        deadline=timestamp(spec.deadline),
        created_at=now(),
        idempotency_key=idempotency_key,
        request_hash=_request_hash(data) if idempotency_key else None,
    )
    job, created = await svc.pool.submit(
        new, svc.settings.max_queue, svc.settings.tenant_queue_share
    )
    location = {"Location": f"/v1/jobs/{job.id}"}
    if created:
        svc.metrics.job_submitted(job.type)
    if not created:
        return job_response(job, 200, {**location, "Idempotent-Replayed": "true"})
    return job_response(job, 202, location)


async def _get(svc: Services, job_id: str, tenant: str | None) -> Job:
    job = await svc.store.get_job(job_id, tenant) if is_id(job_id, "job") else None
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


@routes.get("/v1/jobs/{id}")
async def get(request: web.Request) -> web.Response:
    svc = services(request)
    who = principal(request)
    scope = who.scope()
    wait = query(request, WaitQuery).wait
    job_id = request.match_info["id"]
    if wait <= 0:
        return job_response(await _get(svc, job_id, scope))
    # Subscribe before reading, so a finish between the read and the wait is not missed.
    with svc.hub.job(job_id, who.prefix) as events:
        job = await _get(svc, job_id, scope)
        deadline = now() + wait
        while not job.status.finished and not events.closed and (left := deadline - now()) > 0:
            event = await events.next(within=left)
            if event is not None and event.job.status.finished:
                job = await _get(svc, job_id, scope)
        if events.ending is Ending.REVOKED:
            raise Unauthorized("the key was revoked while this request waited")
        if not job.status.finished:
            # Timed out: answer the state now (it may have started meanwhile).
            job = await _get(svc, job_id, scope)
    return job_response(job)


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    svc = services(request)
    params = query(request, JobListQuery)
    where = JobFilter(
        tenant=principal(request).scope(),
        status=JobStatus(params.status) if params.status else None,
        type=params.type,
        limit=params.limit,
        before=decode_cursor(params.cursor, lambda value: is_id(value, "job")),
    )
    page = await svc.store.list_jobs(where)
    return json_answer(page_body([job.public() for job in page.items], page.next_cursor))


@routes.post("/v1/jobs/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    svc = services(request)
    job = await _get(svc, request.match_info["id"], principal(request).scope())
    if job.status is not JobStatus.QUEUED:
        state = "running" if job.status is JobStatus.RUNNING else f"already {job.status}"
        raise Conflict(f"the job is {state}; only a queued job can be cancelled")
    cancelled = await svc.pool.cancel(job)
    if cancelled is None:
        raise Conflict("the job started before it could be cancelled")
    return job_response(cancelled)
