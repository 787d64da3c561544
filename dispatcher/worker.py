"""The pool that claims jobs and runs their handlers, `DISPATCHER_WORKERS` at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dispatcher.claiming import MAX_LAPSES, ClaimLoop
from dispatcher.delivery.plan import finished, unrecordable
from dispatcher.delivery.shares import SlotShares
from dispatcher.events import EventHub
from dispatcher.handlers import Handler, Registry, Retry
from dispatcher.ids import now, rfc3339
from dispatcher.store.base import Store
from dispatcher.store.records import Job, JobStatus, Outcome

log = logging.getLogger(__name__)


class WorkerPool(ClaimLoop[Job]):
    name = "worker"

    def __init__(
        self,
        store: Store,
        registry: Registry,
        hub: EventHub,
        *,
        owner: str,
        workers: int,
        lease: float,
        poll_interval: float,
        on_finished: Callable[[Job], None] = lambda job: None,
    ) -> None:
        super().__init__(capacity=workers, poll_interval=poll_interval)
        # Fair between tenants: one tenant's long jobs never hold every worker.
        self._shares = SlotShares(workers, workers)
        self._store = store
        self._registry = registry
        self._hub = hub
        self._owner = owner
        self._lease = lease
        self._on_finished = on_finished

    async def _claim(self, limit: int) -> list[Job]:
        """Due jobs, as many as the tenants' fair shares of the workers allow.

        A claim may bring a tenant more than its room (the store does not
        count per tenant): those go back to the queue at once, in their place.
        """
        limit = min(limit, self._shares.most_room())
        if limit <= 0:
            return []
        claimed = await self._store.claim_jobs(
            self._owner, limit, now(), self._lease, skip_tenants=self._shares.full_tenants()
        )
        start, extra = [], []
        for job in claimed:
            if job.id in self._active:
                continue
            (start if self._shares.take(job.tenant) else extra).append(job)
        if extra:
            await self._store.release_jobs(self._owner, [job.id for job in extra])
        return start

    def _may_take(self, tenant: str) -> bool:
        return self._shares.room(tenant) > 0

    def _key(self, item: Job) -> str:
        return item.id

    async def _release(self, keys: list[str]) -> None:
        await self._store.release_jobs(self._owner, keys)

    async def _process(self, item: Job) -> None:
        try:
            await self._run_job(item)
        finally:
            self._shares.give_back(item.tenant)

    async def _run_job(self, item: Job) -> None:
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
        self._hub.publish(job)
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
            self._hub.publish(_requeued(job))
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
        done = await self._store.finish_job(job.id, owner, outcome)
        if done is not None:
            self._hub.publish(done)
            self._on_finished(done)
            details = {**_about(job, "job.finished"), "status": str(done.status)}
            if done.error:
                details["error"] = done.error.get("type", "")
            log.info("job.finished", extra=details)
        return done

    async def cancel(self, job: Job, error: dict[str, str] | None = None) -> Job | None:
        """Cancel a queued job; None if it was no longer queued."""
        outcome = finished(job, JobStatus.CANCELLED, now(), error=error)
        return await self._finish(job, None, outcome)

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
    return {"action": action, "job_id": job.id, "job_type": job.type}


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


def _requeued(job: Job) -> Job:
    return replace(job, status=JobStatus.QUEUED)
