"""The pool that claims jobs and runs their handlers, `DISPATCHER_WORKERS` at a time."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import replace

from dispatcher.delivery.plan import finished
from dispatcher.events import EventHub
from dispatcher.handlers import Registry, Retry
from dispatcher.ids import now
from dispatcher.store.base import Store
from dispatcher.store.records import Job, JobStatus, Outcome

log = logging.getLogger(__name__)


class WorkerPool:
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
        self._store = store
        self._registry = registry
        self._hub = hub
        self._owner = owner
        self._workers = workers
        self._lease = lease
        self._poll_interval = poll_interval
        self._on_finished = on_finished
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._claim_loop(), name="worker-claim-loop")

    def wake(self) -> None:
        """New work may be due: claim now instead of at the next poll."""
        self._wakeup.set()

    async def stop(self, grace: float) -> None:
        """Stop claiming; let running jobs finish for `grace` seconds, then release them.

        A released job goes back to `queued` at once, so another instance (or
        this one after a restart) runs it without waiting for the lease to expire.
        """
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace)
        unfinished = list(self._running)
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        if unfinished:
            await self._store.release_jobs(self._owner, unfinished)
            log.info("worker.released", extra={"action": "worker.released", "jobs": unfinished})

    @property
    def busy(self) -> int:
        return len(self._running)

    async def _claim_loop(self) -> None:
        while True:
            self._wakeup.clear()
            free = self._workers - len(self._running)
            claimed: list[Job] = []
            if free > 0:
                try:
                    claimed = await self._store.claim_jobs(self._owner, free, now(), self._lease)
                except Exception:
                    log.exception("worker.claim_failed", extra={"action": "worker.claim_failed"})
            for job in claimed:
                self._running[job.id] = asyncio.create_task(self._run(job), name=f"job:{job.id}")
            if claimed and len(claimed) == free:
                continue
            try:
                async with asyncio.timeout(self._poll_interval):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _run(self, job: Job) -> None:
        try:
            outcome = await self._execute(job)
            if outcome is not None:
                # Shielded: once a handler has produced a result, shutdown must
                # not cancel the write that records it.
                await asyncio.shield(self._finish(job, self._owner, outcome))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "worker.bookkeeping_failed",
                extra={"action": "worker.bookkeeping_failed", "job_id": job.id},
            )
        finally:
            self._running.pop(job.id, None)
            self._wakeup.set()

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
            async with asyncio.timeout(handler.timeout):
                result = await handler.run(job.payload)
            json.dumps(result)
        except TimeoutError:
            error = {"type": "timeout", "message": f"the job ran longer than {handler.timeout:g}s"}
            return finished(job, JobStatus.FAILED, now(), error=error)
        except Retry as retry:
            if job.retries < handler.retries:
                await self._store.requeue_job(job.id, self._owner, now() + retry.after)
                self._hub.publish(_requeued(job))
                self.wake()
                return None
            error = {
                "type": "retries_exhausted",
                "message": f"the handler asked for a retry after {handler.retries} retries",
            }
            return finished(job, JobStatus.FAILED, now(), error=error)
        except Exception as exc:
            error = {"type": type(exc).__name__, "message": str(exc)}
            return finished(job, JobStatus.FAILED, now(), error=error)
        return finished(job, JobStatus.SUCCEEDED, now(), result=result)

    async def _finish(self, job: Job, owner: str | None, outcome: Outcome) -> Job | None:
        done = await self._store.finish_job(job.id, owner, outcome)
        if done is not None:
            self._hub.publish(done)
            self._on_finished(done)
            log.info(
                "job.finished",
                extra={"action": "job.finished", "job_id": job.id, "status": str(done.status)},
            )
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


def _deadline_error(job: Job) -> dict[str, str]:
    return {"type": "deadline", "message": "the job was not started before its deadline"}


def _deadline_passed(job: Job, at: float) -> Outcome:
    return finished(job, JobStatus.CANCELLED, at, error=_deadline_error(job))


def _requeued(job: Job) -> Job:
    return replace(job, status=JobStatus.QUEUED)
