"""Claims due deliveries and makes one attempt each, many at once.

Deliveries never take job slots. Each attempt is its own task with its own
timeout, so a receiver that hangs holds one slot of `delivery_concurrency`
and slows no one else. Every attempt is recorded, with the delivery state it
leaves, in one write before the next attempt can be scheduled.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence

from dispatcher.claiming import MAX_LAPSES, ClaimLoop, Slot
from dispatcher.delivery.channel import Sender
from dispatcher.delivery.destinations import Destinations
from dispatcher.delivery.endpoints import EndpointBook
from dispatcher.delivery.gates import Gate, Gates
from dispatcher.delivery.plan import callback_failed
from dispatcher.delivery.policy import AttemptResult, Decision, RetryPolicy
from dispatcher.ids import now, rfc3339
from dispatcher.metrics import Metrics
from dispatcher.shares import Destination
from dispatcher.store.base import Store
from dispatcher.store.endpoint_records import Endpoint, EndpointHealth
from dispatcher.store.records import (
    Attempt,
    AttemptRecord,
    Channel,
    Delivery,
    DeliveryStatus,
    DueDelivery,
    delivery_host,
)

log = logging.getLogger(__name__)

# Names remembered with the destination they resolved to; enough for every
# receiver in flight, bounded against a tenant with endless names.
MAX_ROUTES = 4096
# Due deliveries a claim looks at, but for one claim a poll interval.
CLAIM_WINDOW = 1024


class Deliverer(ClaimLoop[DueDelivery]):
    name = "delivery"
    # A delivery just made goes to a free slot even while others wait in the
    # store: those are retries on their own schedule, or passed over for a busy
    # receiver, and claims still reach them at every slot that frees.
    in_turn = False

    def __init__(
        self,
        store: Store,
        senders: Mapping[Channel, Sender],
        policy: RetryPolicy,
        destinations: Destinations,
        *,
        owner: str,
        concurrency: int,
        per_host: int,
        lease: float,
        poll_interval: float,
        endpoints: EndpointBook,
        disable_after: float,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            capacity=concurrency, per_destination=per_host, poll_interval=poll_interval
        )
        self._destinations = destinations
        # (tenant, host column) -> destination, as last resolved: claims pass
        # over the names whose destination has its share in flight.
        self._routes: OrderedDict[tuple[str, str], Destination] = OrderedDict()
        # The other way round: each destination's names among those remembered.
        self._names: dict[Destination, set[tuple[str, str]]] = {}
        self._store = store
        self._senders = senders
        self._policy = policy
        self._owner = owner
        self._lease = lease
        self._next_due: float | None = None
        self._looked_at_all = 0.0
        self._endpoints = endpoints
        self._gates = Gates()
        endpoints.on_change(self._gates.changed)
        self._disable_after = disable_after
        self._metrics = metrics or Metrics()
        # Deliveries past their endpoint's gate, until their attempt ends: the
        # gate, and whether the delivery is its circuit's probe.
        self._passed: dict[str, tuple[Gate, bool]] = {}

    async def _claim_due(self, limit: int, skip_tenants: Sequence[str]) -> list[DueDelivery]:
        full, room = self._route_rooms()
        at = now()
        closed, endpoint_room = self._gates.rooms(at)
        # A claim looks at the oldest due deliveries only, except once a poll
        # interval: a backlog to a busy receiver is passed over at a bounded
        # cost, and what is due behind it is still reached.
        everything = at - self._looked_at_all >= self._poll_interval
        if everything:
            self._looked_at_all = at
        claimed = await self._store.claim_deliveries(
            self._owner,
            limit,
            at,
            self._lease,
            skip_tenants=skip_tenants,
            skip_routes=full,
            route_room=room,
            per_route=self._shares.per_destination,
            window=None if everything else max(CLAIM_WINDOW, limit * 8),
            skip_endpoints=closed,
            endpoint_room=endpoint_room,
        )
        taken = Counter(d.delivery.endpoint_id for d in claimed if d.delivery.endpoint_id)
        self._gates.claimed(endpoint_room, taken)
        return await self._through_gates(claimed)

    async def _through_gates(self, claimed: list[DueDelivery]) -> list[DueDelivery]:
        """The claimed deliveries their endpoints let pass now; the others go back as they were."""
        passed, held = [], []
        try:
            for due in claimed:
                endpoint_id = due.delivery.endpoint_id
                # One still in hand here (its lease lapsed while its attempt was being
                # recorded) is not started again, so it does not pass its gate again.
                if endpoint_id is None or due.delivery.id in self._active:
                    passed.append(due)
                    continue
                endpoint = await self._endpoints.get(endpoint_id)
                if endpoint is None or self.admit(due.delivery.id, endpoint):
                    passed.append(due)
                else:
                    held.append(due.delivery.id)
        except Exception:
            # None of it starts: each gate gets back what it let through.
            for due in passed:
                self._leave_gate(due.delivery.id)
            await self._hand_back(
                [d.delivery.id for d in claimed if d.delivery.id not in self._active]
            )
            raise
        if held:
            await self._hand_back(held)
        return passed

    def admit(self, delivery_id: str, endpoint: Endpoint) -> bool:
        """Pass a delivery through its endpoint's gate, if the gate lets it now."""
        if delivery_id in self._passed:
            return True  # passed already: its lease lapsed while we still work on it
        gate = self._gates.of(endpoint, now())
        probe = gate.take(now())
        if probe is False:
            return False
        self._passed[delivery_id] = (gate, bool(probe))
        return True

    def reserve_delivery(self, tenant: str, delivery_id: str, endpoint: Endpoint | None) -> bool:
        """`reserve`, for a delivery about to be made here, through its endpoint's gate first.

        With a store that several instances share, a delivery to an endpoint
        with a rate or in-flight limit is never handed over: only a claim
        counts what every instance has in flight or has sent.
        """
        if endpoint is not None and self._store.shared and _limited(endpoint):
            return False
        if endpoint is not None and not self.admit(delivery_id, endpoint):
            return False
        if self.reserve(tenant):
            return True
        self._leave_gate(delivery_id)
        return False

    def unreserve_delivery(self, tenant: str, delivery_id: str) -> None:
        self._leave_gate(delivery_id)
        self.unreserve(tenant)

    def _leave_gate(self, delivery_id: str) -> None:
        passed = self._passed.pop(delivery_id, None)
        if passed is not None:
            passed[0].leave()
            if passed[1]:
                passed[0].probing = False

    def _route_rooms(self) -> tuple[list[tuple[str, str]], dict[tuple[str, str], int]]:
        """Routes whose destination has its share in flight, and the room of the others.

        A claim passes over the first and takes no more of the others than
        could start: a backlog to one receiver is not claimed only to be handed back.
        """
        full, room = [], {}
        for where, left in self._shares.busy_destinations():
            for route in self._names.get(where, ()):
                if left <= 0:
                    full.append(route)
                else:
                    room[route] = left
        return full, room

    def _key(self, item: DueDelivery) -> str:
        return item.delivery.id

    def _tenant(self, item: DueDelivery) -> str:
        return item.delivery.tenant

    async def _release(self, keys: list[str]) -> None:
        """Release work taken but not started: no attempt, no schedule spent."""
        for key in keys:
            self._leave_gate(key)
        await self._store.release_deliveries(self._owner, keys)

    def _sleep_for(self) -> float:
        """Until the next retry this process scheduled, a gate's next opening for
        deliveries waiting behind it, or the poll interval."""
        at = now()
        sleep = self._poll_interval
        opening = self._gates.next_opening(at)
        if opening is not None:
            sleep = min(sleep, max(0.0, opening - at))
        if self._next_due is None:
            return sleep
        delay = max(0.0, self._next_due - at)
        if delay <= self._poll_interval:
            self._next_due = None
        return min(delay, sleep)

    async def _process(self, item: DueDelivery, slot: Slot) -> None:
        delivery = item.delivery
        where = (delivery.tenant, await self._destinations.of(delivery))
        self._remember(delivery, where)
        if not self._shares.enter(where):
            # Another name for a destination that has its share in flight.
            slot.free()
            await self._hand_back([delivery.id])
            return
        passed = self._passed.get(delivery.id)
        try:
            started, clock = now(), time.monotonic()
            result = await self._attempt(item, passed[0] if passed else None)
            took = time.monotonic() - clock
            duration_ms = int(took * 1000)
            self._metrics.attempt(str(delivery.channel), result.ok, took)
        finally:
            # The slot goes to the next attempt while this one is recorded.
            self._shares.leave(where)
            self._leave_gate(delivery.id)
            slot.free()
        health = None
        if passed is not None and not passed[0].unusable():
            health = passed[0].learn(
                result, now(), passed[1], self._policy.schedule, self._disable_after
            )
        await self._recorded(item, result, started, duration_ms, health)

    async def _attempt(self, due: DueDelivery, gate: Gate | None) -> AttemptResult:
        unusable = gate.unusable() if gate is not None else None
        if unusable is not None:
            return AttemptResult(ok=False, error=f"not sent: {unusable}", gone=True)
        return await self._send(due)

    def _remember(self, delivery: Delivery, where: Destination) -> None:
        route = (delivery.tenant, delivery_host(delivery.channel, delivery.target))
        before = self._routes.get(route)
        if before is not None and before != where:
            self._forget(route, before)
        self._routes[route] = where
        self._routes.move_to_end(route)
        self._names.setdefault(where, set()).add(route)
        while len(self._routes) > MAX_ROUTES:
            self._forget(*self._routes.popitem(last=False))

    def _forget(self, route: tuple[str, str], where: Destination) -> None:
        names = self._names.get(where)
        if names is not None:
            names.discard(route)
            if not names:
                del self._names[where]

    async def _recorded(
        self,
        due: DueDelivery,
        result: AttemptResult,
        started: float,
        duration_ms: int,
        health: EndpointHealth | None,
    ) -> None:
        """Write the attempt with the state it leaves the delivery (and its endpoint) in."""
        record = self._record(due, result, started, duration_ms, health)
        # Committed even if shutdown cancels this task meanwhile: the store's
        # writer finishes every write it was given.
        await self._store.record_attempt(record)
        if record.health is not None and record.endpoint_id is not None:
            self._endpoints.refresh(record.endpoint_id)
        upcoming = record.next_attempt_at
        if upcoming is not None and (self._next_due is None or upcoming < self._next_due):
            self._next_due = upcoming
        _log_attempt(record, due.delivery)

    def _record(
        self,
        due: DueDelivery,
        result: AttemptResult,
        started: float,
        duration_ms: int,
        health: EndpointHealth | None,
    ) -> AttemptRecord:
        """The attempt, the state it leaves the delivery in, and what it sets off."""
        delivery = due.delivery
        number_in_schedule = delivery.attempt_count + 1 - delivery.schedule_start
        decision = self._policy.decide(result, number_in_schedule, now(), due.deadline)
        if health is not None and health.disabled_at is not None:
            # Its endpoint was disabled by this attempt: nothing more goes to it.
            decision = Decision(DeliveryStatus.FAILED)
        failed_for_good = decision.status is DeliveryStatus.FAILED
        return AttemptRecord(
            owner=self._owner,
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
            endpoint_id=delivery.endpoint_id,
            health=health,
        )

    async def _send(self, due: DueDelivery) -> AttemptResult:
        if due.delivery.lapses > MAX_LAPSES:
            return AttemptResult(ok=False, error=_abandoned(due.delivery), gone=True)
        sender = self._senders.get(due.delivery.channel)
        if sender is None:
            return AttemptResult(
                ok=False, error=f"channel {due.delivery.channel} is not configured"
            )
        try:
            return await sender.send(due)
        except Exception as exc:
            log.exception(
                "delivery.send_crashed",
                extra={"action": "delivery.send_crashed", "delivery_id": due.delivery.id},
            )
            return AttemptResult(ok=False, error=f"internal error: {type(exc).__name__}")


def _log_attempt(record: AttemptRecord, delivery: Delivery) -> None:
    """One line per attempt; a failure says why, and one that ends the delivery is a WARNING."""
    attempt = record.attempt
    details: dict[str, object] = {
        "delivery_id": delivery.id,
        "job_id": delivery.job_id,
        "tenant": delivery.tenant,
        "channel": str(delivery.channel),
        "attempt": attempt.number,
        "status_code": attempt.status_code,
        "outcome": str(record.status),
    }
    if delivery.endpoint_id is not None:
        details["endpoint_id"] = delivery.endpoint_id
    if attempt.error:
        details["error"] = attempt.error
    if record.next_attempt_at is not None:
        details["next_attempt_at"] = rfc3339(record.next_attempt_at)
    if record.status is DeliveryStatus.FAILED:
        log.warning("delivery.failed", extra={"action": "delivery.failed", **details})
    else:
        log.info("delivery.attempted", extra={"action": "delivery.attempted", **details})


def _limited(endpoint: Endpoint) -> bool:
    return endpoint.rate_limit is not None or endpoint.max_in_flight is not None


def _abandoned(delivery: Delivery) -> str:
    return (
        f"the delivery lost its sender {delivery.lapses} times (the process was killed or "
        "its task died mid-attempt); it is not tried again"
    )


def _text(value: str | None) -> str | None:
    """What a far end said, made storable: a relay may answer in Latin-1, which
    arrives as lone surrogates that neither SQLite nor JSON can hold, and any
    answer may hold NUL, which PostgreSQL's text cannot."""
    if value is None:
        return None
    try:
        # Bytes that came in escaped go back to bytes, then each bad one is marked.
        text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        text = value.encode("utf-8", "replace").decode()
    return text.replace("\x00", "\ufffd")
