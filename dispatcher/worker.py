"""The pool that claims jobs and runs their handlers, `DISPATCHER_WORKERS` at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from dispatcher.claiming import MAX_LAPSES, ClaimLoop, Slot
from dispatcher.delivery.deliverer import Deliverer
from dispatcher.delivery.endpoints import EndpointBook
from dispatcher.delivery.plan import finished, handed_over, to_endpoint, unrecordable
from dispatcher.handlers import Handler, Registry, Retry
from dispatcher.ids import now, rfc3339
from dispatcher.metrics import Metrics
from dispatcher.store.base import Store
from dispatcher.store.feed import Change, ChangeFeed, ChangeKind
from dispatcher.store.records import Job, JobStatus, Lease, NewJob, Outcome

log = logging.getLogger(__name__)


class WorkerPool(ClaimLoop[Job]):
    name = "worker"

    def __init__(
        self,
        store: Store,
        registry: Registry,
        feed: ChangeFeed,
        deliverer: Deliverer,
        endpoints: EndpointBook,
        *,
        owner: str,
        workers: int,
        lease: float,
        poll_interval: float,
        metrics: Metrics | None = None,
    ) -> None:
        # Fair between tenants: one tenant's long jobs never hold every worker.
        super().__init__(capacity=workers, per_destination=workers, poll_interval=poll_interval)
        self._store = store
        self._registry = registry
        self._feed = feed
        self._deliverer = deliverer
        self._endpoints = endpoints
        self._metrics = metrics or Metrics()
        self._owner = owner
        self._lease = lease

    @property
    def owner(self) -> str:
        """The name this process's leases are taken under."""
        return self._owner

    async def submit(
        self, job: NewJob, max_queue: int, tenant_share: int | None
    ) -> tuple[Job, bool]:
        """Write a new job: straight to a free worker if there is one, else queued.

        With a worker free, the job is written running under this process's
        lease and started once committed, with no claim. Either way the answer
        and the first event show the job as it was accepted, queued; a read a
        moment later may find it running. The write goes on if the caller
        gives up (its client hung up), and what follows it still happens.
        """
        tenant = job.tenant
        lease = Lease(self._owner, self._lease) if self.reserve(tenant) else None
        write = asyncio.ensure_future(self._store.submit_job(job, max_queue, tenant_share, lease))
        accepted: list[Job] = []  # made once, by what follows the write
        write.add_done_callback(lambda done: self._after_submit(done, tenant, lease, accepted))
        record, created = await asyncio.shield(write)
        return (accepted[0] if accepted else record), created

    def _after_submit(
        self,
        write: asyncio.Future[tuple[Job, bool]],
        tenant: str,
        lease: Lease | None,
        accepted: list[Job],
    ) -> None:
        if write.cancelled() or write.exception() is not None:
            if lease is not None:
                self.unreserve(tenant)
            return
        record, created = write.result()
        if created:
            accepted.append(_as_accepted(record))
            self._feed.publish(Change.of_job(accepted[0]))
        if lease is None:
            if created:
                # No worker here was free: any instance's may take it.
                self._feed.publish(Change(ChangeKind.JOBS_DUE, tenant))
        elif created:
            self.hand(record)  # after the event above: subscribers see queued, then running
        else:
            self.unreserve(tenant)  # an idempotent repeat: the first job is the one

    async def _claim_due(self, limit: int, skip_tenants: Sequence[str]) -> list[Job]:
        return await self._store.claim_jobs(
            self._owner, limit, now(), self._lease, skip_tenants=skip_tenants
        )

    def _key(self, item: Job) -> str:
        return item.id

    def _tenant(self, item: Job) -> str:
        return item.tenant

    async def _release(self, keys: list[str]) -> None:
        await self._store.release_jobs(self._owner, keys)

    async def _process(self, item: Job, slot: Slot) -> None:
        try:
            outcome = _abandoned(item) or await self._execute(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not even a failure could be put into words (an outcome that JSON
            # or UTF-8 cannot carry): fail it with what can be.
            log.exception(
                "worker.outcome_failed",
                extra={"action": "worker.outcome_failed", "job_id": item.id},
            )
            outcome = unrecordable(item, exc)
        # The worker is free for the next job while this one is recorded.
        slot.free()
        if outcome is not None:
            # Shielded: once a handler has produced a result, shutdown must
            # not cancel the write that records it.
            await asyncio.shield(self._finish_or_fail(item, outcome))

    async def _execute(self, job: Job) -> Outcome | None:
        """Run the handler; an Outcome to record, or None when the job was requeued."""
        started = now()
        if job.deadline is not None and job.deadline < started:
            return _deadline_passed(job, started)
        handler = self._registry.get(job.type)
        if handler is None:
            error = {"type": "unknown_type", "message": f"no handler for job type {job.type!r}"}
            return finished(job, JobStatus.FAILED, now(), error=error)
        self._feed.publish(Change.of_job(job))
        try:
            result = await _call(handler, job.payload)
            return finished(job, JobStatus.SUCCEEDED, now(), result=result)
        except Retry as retry:
            return await self._retry(job, handler.retries, retry.after)
        except _Overran:
            error = {"type": "timeout", "message": f"the job ran longer than {handler.timeout:g}s"}
            log.warning("job.timed_out", extra=_about(job, "job.timed_out"))
            return finished(job, JobStatus.FAILED, now(), error=error)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # shutdown: the job is released, not failed
            return _handler_failed(job, exc)
        except _Escaped as escaped:
            return _handler_failed(job, escaped.original)
        except Exception as exc:
            return _handler_failed(job, exc)

    async def _retry(self, job: Job, retries: int, after: float) -> Outcome | None:
        if job.retries < retries:
            run_at = now() + after
            await self._store.requeue_job(job.id, self._owner, run_at)
            self._feed.publish(Change.of_job(_requeued(job)))
            self.wake()
            log.info(
                "job.retry_scheduled",
                extra={
                    **_about(job, "job.retry_scheduled"),
                    "retry": f"{job.retries + 1}/{retries}",
                    "run_at": rfc3339(run_at),
                },
            )
            return None
        if retries == 0:
            message = "the handler asked for a retry, but its job type allows none (retries=0)"
        else:
            spent = "its only retry" if retries == 1 else f"all {retries} of its retries"
            message = f"the handler asked for a retry after {spent}"
        error = {"type": "retries_exhausted", "message": message}
        log.warning("job.retries_exhausted", extra=_about(job, "job.retries_exhausted"))
        return finished(job, JobStatus.FAILED, now(), error=error)

    async def _finish_or_fail(self, job: Job, outcome: Outcome) -> None:
        """Record how the job ended; if that cannot be, fail it with an error that says so.

        Left running, the job would run again at every lease. The fallback is
        delivered like any failure; if even its deliveries cannot be stored,
        the job fails without them. Should that fail too (the database is
        gone), the lease lapses and the lapse count ends the job later.
        """
        try:
            await self._finish(job, self._owner, outcome)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception(
                "job.finish_failed", extra={"action": "job.finish_failed", "job_id": job.id}
            )
            fallback = unrecordable(job, exc)
        try:
            await self._finish(job, self._owner, fallback)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "job.finish_failed", extra={"action": "job.finish_failed", "job_id": job.id}
            )
            await self._finish(job, self._owner, replace(fallback, deliveries=()))

    async def _finish(self, job: Job, owner: str | None, outcome: Outcome) -> Job | None:
        """Record the outcome; its deliveries go straight to free delivery slots.

        As with a submission, each delivery given a slot is written under this
        process's lease and started once that is committed. Callers shield
        this: once the write is sent, what follows it must happen too.
        """
        deliverer = self._deliverer
        endpoint = None
        if job.endpoint_id is not None and any(d.endpoint_id for d in outcome.deliveries):
            endpoint = await self._endpoints.get(job.endpoint_id)
            outcome = to_endpoint(outcome, endpoint)
        handed = [
            d
            for d in outcome.deliveries
            if deliverer.reserve_delivery(job.tenant, d.id, endpoint if d.endpoint_id else None)
        ]
        lease = Lease(self._owner, self._lease) if handed else None
        done = None
        try:
            done = await self._store.finish_job(
                job.id, owner, outcome, lease, frozenset(d.id for d in handed)
            )
        finally:
            if done is None:  # not written (or no longer this process's to finish)
                for d in handed:
                    deliverer.unreserve_delivery(job.tenant, d.id)
        if done is None:
            return None
        for new in handed:
            deliverer.hand(handed_over(done, new, outcome))
        if len(handed) < len(outcome.deliveries):
            self._feed.publish(Change(ChangeKind.DELIVERIES_DUE, job.tenant))
        self._feed.publish(Change.of_job(done))
        ran_for = (
            done.finished_at - done.started_at if done.started_at and done.finished_at else None
        )
        self._metrics.job_finished(done.type, str(done.status), ran_for)
        details = {**_about(job, "job.finished"), "status": str(done.status)}
        if done.error:
            details["error"] = done.error.get("type", "")
        log.info("job.finished", extra=details)
        return done

    async def cancel(self, job: Job, error: dict[str, str] | None = None) -> Job | None:
        """Cancel a queued job; None if it was no longer queued."""
        outcome = finished(job, JobStatus.CANCELLED, now(), error=error)
        return await asyncio.shield(self._finish(job, None, outcome))

    async def cancel_expired(self, limit: int = 200) -> int:
        """Cancel queued jobs whose deadline passed before any worker started them."""
        jobs = await self._store.expired_deadlines(now(), limit)
        for job in jobs:
            await self.cancel(job, _deadline_error(job))
        return len(jobs)


class _Overran(Exception):
    """The handler outlived its timeout."""


async def _call(handler: Handler, payload: Any) -> Any:
    """The handler's result, or _Overran once its timeout passes.

    The handler runs as a task of its own and is waited for, not awaited: one
    that swallows CancelledError would otherwise hold its slot (and shutdown)
    for as long as it likes. Past the timeout it is cancelled and left behind.
    """
    task = asyncio.ensure_future(_contained(handler, payload))
    try:
        done, _ = await asyncio.wait({task}, timeout=handler.timeout)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_forget)
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_forget)
        raise _Overran()
    return task.result()


class _Escaped(Exception):
    """A SystemExit from a handler, carried as an ordinary exception."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


async def _contained(handler: Handler, payload: Any) -> Any:
    # asyncio lets a task's SystemExit out of the event loop, stopping the
    # process: inside the task, it must become an ordinary exception.
    try:
        return await handler.run(payload)
    except SystemExit as exc:
        raise _Escaped(exc) from exc


def _forget(task: asyncio.Future[Any]) -> None:
    """Take an abandoned handler's end, so asyncio does not log it as unretrieved."""
    if not task.cancelled():
        task.exception()


def _about(job: Job, action: str) -> dict[str, str]:
    return {"action": action, "job_id": job.id, "job_type": job.type, "tenant": job.tenant}


def _handler_failed(job: Job, exc: BaseException) -> Outcome:
    """The handler raised: its traceback goes to the log, where its developer looks."""
    log.error(
        "job.handler_failed", exc_info=(type(exc), exc, exc.__traceback__),
        extra=_about(job, "job.handler_failed"),
    )  # fmt: skip
    return _failed(job, exc)


def _failed(job: Job, exc: BaseException) -> Outcome:
    # The message is the handler's text: make sure it can be encoded at all.
    message = str(exc).encode("utf-8", "replace").decode()
    return finished(
        job, JobStatus.FAILED, now(), error={"type": type(exc).__name__, "message": message}
    )


def _abandoned(job: Job) -> Outcome | None:
    if job.lapses <= MAX_LAPSES:
        return None
    message = (
        f"the job lost its worker {job.lapses} times (the process was killed or its task "
        "died while it ran); it is not run again"
    )
    return finished(job, JobStatus.FAILED, now(), error={"type": "abandoned", "message": message})


def _deadline_error(job: Job) -> dict[str, str]:
    return {"type": "deadline", "message": "the job was not started before its deadline"}


def _deadline_passed(job: Job, at: float) -> Outcome:
    return finished(job, JobStatus.CANCELLED, at, error=_deadline_error(job))


def _as_accepted(job: Job) -> Job:
    if job.status is JobStatus.QUEUED:
        return job
    return replace(job, status=JobStatus.QUEUED, started_at=None)


def _requeued(job: Job) -> Job:
    return replace(job, status=JobStatus.QUEUED)
