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
from collections import Counter
from collections.abc import Mapping

from dispatcher.claiming import ClaimLoop
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
    delivery_host,
)

log = logging.getLogger(__name__)


class Deliverer(ClaimLoop[DueDelivery]):
    name = "delivery"

    def __init__(
        self,
        store: Store,
        senders: Mapping[Channel, Sender],
        policy: RetryPolicy,
        *,
        owner: str,
        concurrency: int,
        per_host: int,
        lease: float,
        poll_interval: float,
    ) -> None:
        super().__init__(capacity=concurrency, poll_interval=poll_interval)
        self._per_host = per_host
        self._host_load: Counter[str] = Counter()
        self._store = store
        self._senders = senders
        self._policy = policy
        self._owner = owner
        self._lease = lease
        self._next_due: float | None = None

    async def _claim(self, limit: int) -> list[DueDelivery]:
        """Due deliveries, at most `per_host` in flight to any one host.

        A receiver that hangs holds only its own share of the slots, so the
        rest keep flowing to everyone else.
        """
        full = [host for host, load in self._host_load.items() if load >= self._per_host]
        claimed = await self._store.claim_deliveries(
            self._owner, limit, now(), self._lease, skip_hosts=full
        )
        load = Counter(self._host_load)
        start, extra = [], []
        for due in claimed:
            if due.delivery.id in self._active:
                continue  # still in flight here
            host = _host(due)
            if load[host] < self._per_host:
                load[host] += 1
                start.append(due)
            else:
                extra.append(due.delivery.id)
        if extra:
            # One claim may bring more for a host than its share: hand them back.
            try:
                await self._store.release_deliveries(self._owner, extra)
            except Exception:
                log.exception(
                    "delivery.release_failed", extra={"action": "delivery.release_failed"}
                )
        # Counted only now, when nothing can fail before their tasks start.
        for due in start:
            self._host_load[_host(due)] += 1
        return start

    def _key(self, item: DueDelivery) -> str:
        return item.delivery.id

    async def _release(self, keys: list[str]) -> None:
        await self._store.release_deliveries(self._owner, keys)

    def _sleep_for(self) -> float:
        """Until the next retry this process scheduled, or the poll interval."""
        if self._next_due is None:
            return self._poll_interval
        delay = max(0.0, self._next_due - now())
        if delay <= self._poll_interval:
            self._next_due = None
        return min(delay, self._poll_interval)

    async def _process(self, item: DueDelivery) -> None:
        try:
            await self._attempt(item)
        finally:
            host = _host(item)
            self._host_load[host] -= 1
            if self._host_load[host] <= 0:
                del self._host_load[host]

    async def _attempt(self, due: DueDelivery) -> None:
        """One attempt, recorded with the state it leaves the delivery in."""
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
        # Shielded: shutdown must not lose the record of an attempt that was made.
        await asyncio.shield(self._store.record_attempt(record))
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
                error=_text(result.error),
                response_body=_text(result.response_body),
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


def _host(due: DueDelivery) -> str:
    return delivery_host(due.delivery.channel, due.delivery.target)


def _text(value: str | None) -> str | None:
    """What a far end said, made storable: a relay may answer in Latin-1, which
    arrives as lone surrogates that neither SQLite nor JSON can hold."""
    if value is None:
        return None
    try:
        # Bytes that came in escaped go back to bytes, then each bad one is marked.
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode()
