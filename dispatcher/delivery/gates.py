"""Each registered endpoint's gate: its rate limit, its in-flight limit and its circuit.

A delivery passes its endpoint's gate before it takes a delivery slot, and a
delivery the gate holds back stays in the store as it was: no attempt is
made or counted, its schedule is not consumed, and no other endpoint waits.

- **Rate limit**: a token bucket refilled at `rate_limit` a second, holding
  a little over one token, so that a wake-up a few milliseconds late loses no
  time and no burst passes the limit by more than a token or two.
- **In flight**: at most `max_in_flight` attempts at once, counted from the
  moment a delivery passes to the end of its attempt.
- **Circuit**: opened when every attempt in the last minute has failed (the
  first failure with no success in the minute before it). While it is open
  one probe goes at a time, no sooner than `probe_at`; each failed probe puts
  the next one further off, on the retry schedule's pace. The first success
  closes it, and the backlog drains at the rate limit, or, for an endpoint
  without one, at a pace that starts at RECOVERY_RATE and doubles every
  RECOVERY_DOUBLING seconds, not all at once.

The circuit and the endpoint's failing streak are its `EndpointHealth`,
written to its row whenever they change (with the attempt that changed
them), so a restart or another instance goes on from them; other instances
take it up when the change feed tells them. Tokens and the in-flight count
here are this process's own, which is all there is with SQLite. A store that
several instances share (PostgreSQL) also keeps both in the database and
counts them at each claim, across instances; such an endpoint's deliveries
are then never handed over, only claimed (see Deliverer.reserve_delivery).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from dispatcher.delivery.policy import AttemptResult
from dispatcher.ids import rfc3339
from dispatcher.store.endpoint_records import Endpoint, EndpointHealth

CIRCUIT_WINDOW = 60.0
RECOVERY_RATE = 10.0
RECOVERY_DOUBLING = 5.0
RECOVERY_CEILING = 1000.0
# Tokens a bucket holds beyond the one a delivery takes: lateness forgiven, in intervals.
SLACK = 0.4
# Gates remembered at once; idle ones are dropped past it.
MAX_GATES = 4096


class Gate:
    def __init__(self, endpoint: Endpoint, at: float) -> None:
        self.endpoint = endpoint
        self.health = endpoint.health
        self.in_flight = 0
        self.probing = False
        self.last_success: float | None = None
        self.recovering_since: float | None = None
        # Whether deliveries may be waiting behind the gate, to wake up for.
        self.backlog = False
        self._tokens = 1.0 + SLACK
        self._at = at

    def sync(self, endpoint: Endpoint, changed: bool) -> None:
        """Take up its current settings; after a change made through the API, its health too."""
        self.endpoint = endpoint
        if changed:
            self.health = endpoint.health
            self.probing = False

    def unusable(self) -> str | None:
        """Why nothing may be sent to it now (deleted, disabled), or None."""
        if self.endpoint.deleted_at is not None:
            return f"the endpoint {self.endpoint.id} was deleted"
        if self.health.disabled_at is not None:
            return f"the endpoint {self.endpoint.id} is disabled: {self.health.disabled_reason}"
        return None

    def rate(self, at: float) -> float | None:
        limit = self.endpoint.rate_limit
        if limit is not None:
            return float(limit)
        if self.recovering_since is not None:
            pace = RECOVERY_RATE * 2 ** ((at - self.recovering_since) / RECOVERY_DOUBLING)
            if pace < RECOVERY_CEILING:
                return pace
            self.recovering_since = None
        return None

    def room(self, at: float) -> int | None:
        """How many deliveries may pass now; None for no bound."""
        if self.unusable():
            return None  # let them through: they end at once, saying why
        if self.health.open:
            return 1 if not self.probing and at >= (self.health.probe_at or 0) else 0
        bounds = []
        if self.endpoint.max_in_flight is not None:
            bounds.append(max(0, self.endpoint.max_in_flight - self.in_flight))
        if self._refill(at):
            bounds.append(int(self._tokens))
        return min(bounds) if bounds else None

    def take(self, at: float) -> bool | None:
        """Let one delivery pass: False if it must wait, True for a probe, else None."""
        room = self.room(at)
        if room is not None and room <= 0:
            self.backlog = True
            return False
        probe = self.health.open and not self.unusable()
        if probe:
            self.probing = True
        if self.rate(at) is not None:
            self._tokens -= 1
        self.in_flight += 1
        return True if probe else None

    def leave(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    def next_opening(self, at: float) -> float | None:
        """When room may come again without an attempt ending, if something waits for it."""
        if not self.backlog:
            return None
        if self.health.open:
            return None if self.probing else max(at, self.health.probe_at or at)
        rate = self.rate(at)
        if rate is None or not self._refill(at) or self._tokens >= 1:
            return None
        return at + (1 - self._tokens) / rate

    def idle(self) -> bool:
        return self.in_flight == 0 and not self.health.open and not self.backlog

    def _refill(self, at: float) -> bool:
        rate = self.rate(at)
        if rate is None:
            return False
        self._tokens = min(1.0 + SLACK, self._tokens + (at - self._at) * rate)
        self._at = at
        return True

    def learn(
        self,
        result: AttemptResult,
        at: float,
        probe: bool,
        schedule: Sequence[float],
        disable_after: float,
    ) -> EndpointHealth | None:
        """Take in an attempt's result; the endpoint's new health if it changed."""
        before = self.health
        if probe:
            self.probing = False
        if result.ok:
            self.last_success = at
            if before.open:
                self.recovering_since = at
            if before.failing_since is not None or before.open:
                self.health = EndpointHealth()
        else:
            self.health = self._failed(before, result, at, probe, schedule, disable_after)
        return self.health if self.health != before else None

    def _failed(
        self,
        health: EndpointHealth,
        result: AttemptResult,
        at: float,
        probe: bool,
        schedule: Sequence[float],
        disable_after: float,
    ) -> EndpointHealth:
        failing_since = health.failing_since if health.failing_since is not None else at
        health = replace(health, failing_since=failing_since)
        if result.gone:
            return _disabled(health, "the endpoint answered 410 Gone", at)
        if at - failing_since >= disable_after:
            reason = f"no attempt succeeded since {rfc3339(failing_since)}"
            return _disabled(health, reason, at)
        if health.open:
            if not probe:
                return health
            probes = health.probes + 1
            return replace(health, probes=probes, probe_at=at + _pace(schedule, probes))
        if self.last_success is None or at - self.last_success >= CIRCUIT_WINDOW:
            return replace(health, circuit_since=at, probes=0, probe_at=at + _pace(schedule, 0))
        return health


def _disabled(health: EndpointHealth, reason: str, at: float) -> EndpointHealth:
    return replace(
        health,
        circuit_since=None,
        probe_at=None,
        probes=0,
        disabled_reason=reason,
        disabled_at=at,
    )


def _pace(schedule: Sequence[float], failed_probes: int) -> float:
    """The wait before the next probe: the retry schedule's step for that many failures."""
    if not schedule:
        return CIRCUIT_WINDOW
    return schedule[min(failed_probes, len(schedule) - 1)]


class Gates:
    """The gates of the endpoints this process sends to."""

    def __init__(self) -> None:
        self._gates: dict[str, Gate] = {}

    def of(self, endpoint: Endpoint, at: float) -> Gate:
        gate = self._gates.get(endpoint.id)
        if gate is None:
            if len(self._gates) >= MAX_GATES:
                self._drop_idle()
            gate = self._gates[endpoint.id] = Gate(endpoint, at)
        elif endpoint.updated_at >= gate.endpoint.updated_at:
            # Its settings; never a copy read before the last change through the API.
            gate.sync(endpoint, changed=False)
        return gate

    def changed(self, endpoint: Endpoint) -> None:
        """It was changed through the API (re-enabled, pointed elsewhere): take up its
        settings and its health now, so that no claim passes it over on what was."""
        gate = self._gates.get(endpoint.id)
        if gate is not None:
            gate.sync(endpoint, changed=True)

    def rooms(self, at: float) -> tuple[list[str], dict[str, int]]:
        """Endpoints nothing may pass now, and the room of those with a bound."""
        closed, room = [], {}
        for endpoint_id, gate in self._gates.items():
            left = gate.room(at)
            if left is None:
                continue
            if left <= 0:
                closed.append(endpoint_id)
            else:
                room[endpoint_id] = left
        return closed, room

    def claimed(self, room: dict[str, int], taken: dict[str, int]) -> None:
        """After a claim: an endpoint that got all its room may have more waiting."""
        for endpoint_id, left in room.items():
            gate = self._gates.get(endpoint_id)
            if gate is not None:
                gate.backlog = taken.get(endpoint_id, 0) >= left

    def next_opening(self, at: float) -> float | None:
        times = [t for gate in self._gates.values() if (t := gate.next_opening(at)) is not None]
        return min(times, default=None)

    def _drop_idle(self) -> None:
        for endpoint_id in [i for i, gate in self._gates.items() if gate.idle()]:
            del self._gates[endpoint_id]
