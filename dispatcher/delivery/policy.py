"""Whether and when a delivery is tried again, decided by tenacity's strategies.

The retry itself is not a sleeping coroutine: the decision becomes the row's
`next_attempt_at`, so it survives a restart. tenacity is asked, for the attempt
just made, `retry` (is this outcome worth retrying?), `stop` (is the schedule
spent?) and `wait` (how long until the next one?).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tenacity import (
    RetryCallState,
    retry_if_result,
    stop_after_attempt,
    wait_chain,
    wait_fixed,
    wait_random,
)
from tenacity.wait import wait_base

from dispatcher.store.records import DeliveryStatus

# A receiver's Retry-After is honoured in full ("no sooner than it asks"),
# capped only where a time would no longer be representable.
MAX_RETRY_AFTER = 50 * 365 * 86_400.0
JITTER = 0.1


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one try of a delivery gave, whatever the channel."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    retry_after: float | None = None
    # The receiver said never again (410 Gone).
    gone: bool = False


class wait_retry_after(wait_base):
    """At least as long as the receiver's Retry-After, and at least `floor`."""

    def __init__(self, floor: wait_base) -> None:
        self.floor = floor

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self.floor(retry_state)
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            asked = outcome.result().retry_after
            if asked is not None:
                wait = max(wait, min(asked, MAX_RETRY_AFTER))
        return wait


@dataclass(frozen=True, slots=True)
class Decision:
    status: DeliveryStatus
    next_attempt_at: float | None = None


class RetryPolicy:
    def __init__(self, schedule: Sequence[float]) -> None:
        self.schedule = tuple(schedule)
        self.retry = retry_if_result(lambda result: not result.ok and not result.gone)
        self.stop = stop_after_attempt(len(schedule) + 1)
        steps = [wait_fixed(delay) + wait_random(0, delay * JITTER) for delay in schedule]
        self.wait = wait_retry_after(wait_chain(*steps) if steps else wait_fixed(0))

    def decide(
        self, result: AttemptResult, attempt: int, at: float, deadline: float | None = None
    ) -> Decision:
        """The state a delivery is left in after its `attempt`-th try of the schedule."""
        if result.ok:
            return Decision(DeliveryStatus.SUCCEEDED)
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        state.set_result(result)
        if not self.retry(state) or self.stop(state):
            return Decision(DeliveryStatus.FAILED)
        next_at = at + self.wait(state)
        if deadline is not None and next_at > deadline:
            return Decision(DeliveryStatus.FAILED)
        return Decision(DeliveryStatus.PENDING, next_at)
