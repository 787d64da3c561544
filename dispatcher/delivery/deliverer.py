"""Claims due deliveries and makes one attempt each, many at once.

Deliveries never take job slots. Each attempt is its own task with its own
timeout, so a receiver that hangs holds one slot of `delivery_concurrency`
and slows no one else. Every attempt is recorded, with the delivery state it
leaves, in one write before the next attempt can be scheduled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from dispatcher.delivery.channel import Sender
from dispatcher.delivery.plan import callback_failed
from dispatcher.delivery.policy import AttemptResult, RetryPolicy
from dispatcher.ids import now
from dispatcher.store.base import Store
from dispatcher.store.records import (
    Attempt,
    AttemptRecord,
    Channel,
    DeliveryStatus,
    DueDelivery,
)

log = logging.getLogger(__name__)


class Deliverer:
    def __init__(
        self,
        store: Store,
        senders: Mapping[Channel, Sender],
        policy: RetryPolicy,
        *,
        owner: str,
        concurrency: int,
        lease: float,
        poll_interval: float,
    ) -> None:
        self._store = store
        self._senders = senders
        self._policy = policy
        self._owner = owner
        self._concurrency = concurrency
        self._lease = lease
        self._poll_interval = poll_interval
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._next_due: float | None = None
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._claim_loop(), name="deliverer-claim-loop")

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def busy(self) -> int:
        return len(self._in_flight)

    async def stop(self, grace: float) -> None:
        """Stop claiming; give attempts in flight `grace` seconds, then release the rest."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=grace)
        unfinished = list(self._in_flight)
        for task in self._in_flight.values():
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        if unfinished:
            await self._store.release_deliveries(self._owner, unfinished)

    async def _claim_loop(self) -> None:
        while True:
            self._wakeup.clear()
            free = self._concurrency - len(self._in_flight)
            claimed: list[DueDelivery] = []
            if free > 0:
                try:
                    claimed = await self._store.claim_deliveries(
                        self._owner, free, now(), self._lease
                    )
                except Exception:
                    log.exception(
                        "delivery.claim_failed", extra={"action": "delivery.claim_failed"}
                    )
            for due in claimed:
                task = asyncio.create_task(self._attempt(due), name=f"delivery:{due.delivery.id}")
                self._in_flight[due.delivery.id] = task
            if claimed and len(claimed) == free:
                continue
            try:
                async with asyncio.timeout(self._sleep_for()):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _sleep_for(self) -> float:
        """Until the next retry this process scheduled, or the poll interval."""
        if self._next_due is None:
            return self._poll_interval
        delay = max(0.0, self._next_due - now())
        if delay <= self._poll_interval:
            self._next_due = None
        return min(delay, self._poll_interval)

    async def _attempt(self, due: DueDelivery) -> None:
        delivery = due.delivery
        started = now()
        clock = time.monotonic()
        try:
            result = await self._send(due)
        except Exception as exc:
            log.exception(
                "delivery.send_crashed",
                extra={"action": "delivery.send_crashed", "delivery_id": delivery.id},
            )
            result = AttemptResult(ok=False, error=f"internal error: {type(exc).__name__}")
        record = self._record(due, result, started, int((time.monotonic() - clock) * 1000))
        try:
            # Shielded: shutdown must not lose the record of an attempt that was made.
            await asyncio.shield(self._store.record_attempt(record))
        finally:
            self._in_flight.pop(delivery.id, None)
            self._wakeup.set()
        upcoming = record.next_attempt_at
        if upcoming is not None and (self._next_due is None or upcoming < self._next_due):
            self._next_due = upcoming
        log.info(
            "delivery.attempted",
            extra={
                "action": "delivery.attempted",
                "delivery_id": delivery.id,
                "status_code": result.status_code,
                "outcome": str(record.status),
            },
        )

    def _record(
        self, due: DueDelivery, result: AttemptResult, started: float, duration_ms: int
    ) -> AttemptRecord:
        """The attempt, the state it leaves the delivery in, and what it sets off."""
        delivery = due.delivery
        number_in_schedule = delivery.attempt_count + 1 - delivery.schedule_start
        decision = self._policy.decide(result, number_in_schedule, now(), due.deadline)
        failed_for_good = decision.status is DeliveryStatus.FAILED
        return AttemptRecord(
            delivery_id=delivery.id,
            attempt=Attempt(
                number=delivery.attempt_count + 1,
                started_at=started,
                duration_ms=duration_ms,
                status_code=result.status_code,
                error=result.error,
                response_body=result.response_body,
                trigger=delivery.trigger,
                by=delivery.triggered_by,
            ),
            status=decision.status,
            next_attempt_at=decision.next_attempt_at,
            follow_ups=callback_failed(due, result) if failed_for_good else (),
        )

    async def _send(self, due: DueDelivery) -> AttemptResult:
        sender = self._senders.get(due.delivery.channel)
        if sender is None:
            return AttemptResult(
                ok=False, error=f"channel {due.delivery.channel} is not configured"
            )
        return await sender.send(due)
