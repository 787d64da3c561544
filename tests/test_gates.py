"""An endpoint's gate on its own: the rules of its rate, its in-flight count and its circuit."""

from __future__ import annotations

from dataclasses import replace

from dispatcher.delivery.gates import CIRCUIT_WINDOW, RECOVERY_RATE, Gate, Gates
from dispatcher.delivery.policy import AttemptResult
from dispatcher.store.endpoint_records import Endpoint, EndpointHealth, Signature
from dispatcher.store.signing import SigningSecrets

T0 = 1_700_000_000.0
SCHEDULE = (5.0, 300.0, 1800.0)
OK = AttemptResult(ok=True, status_code=200)
FAILED = AttemptResult(ok=False, status_code=500, error="HTTP 500")
GONE = AttemptResult(ok=False, status_code=410, error="HTTP 410", gone=True)


def endpoint(**fields) -> Endpoint:
    values = dict(
        id="ep_1", tenant="acme", url="http://127.0.0.1:9/h", description=None, headers={},
        event_types=None, signature=Signature.HMAC, secrets=SigningSecrets("whsec_AAAA"),
        rate_limit=None, max_in_flight=None, health=EndpointHealth(), created_at=T0,
        updated_at=T0,
    )  # fmt: skip
    values.update(fields)
    return Endpoint(**values)


def passed_in(gate: Gate, start: float, seconds: float, step: float = 0.001) -> int:
    """Deliveries let through when one is tried every `step` seconds, each ending at once."""
    count, at = 0, start
    while at < start + seconds:
        if gate.take(at) is not False:
            gate.leave()
            count += 1
        at += step
    return count


def learn(gate: Gate, result: AttemptResult, at: float, probe: bool = False):
    return gate.learn(result, at, probe, SCHEDULE, disable_after=86_400)


def test_a_rate_limit_lets_that_many_a_second_through_over_ten_seconds():
    for rate in (1, 20, 500):
        gate = Gate(endpoint(rate_limit=rate), T0)
        assert rate * 10 <= passed_in(gate, T0, 10) <= rate * 10 * 1.1 + 1


def test_a_late_wake_up_loses_no_time():
    gate = Gate(endpoint(rate_limit=20), T0)
    # Tried only every 60 ms, later than every 50 ms a token comes: still 20 a second.
    assert passed_in(gate, T0, 10, step=0.06) >= 10 * 20 * 0.8
    assert gate.next_opening(T0 + 10) is not None or gate.room(T0 + 10)


def test_max_in_flight_counts_from_pass_to_leave():
    gate = Gate(endpoint(max_in_flight=2), T0)
    assert gate.take(T0) is None and gate.take(T0) is None
    assert gate.take(T0) is False and gate.room(T0) == 0
    gate.leave()
    assert gate.room(T0) == 1


def test_the_first_failure_without_a_success_in_the_last_minute_opens_the_circuit():
    gate = Gate(endpoint(), T0)
    health = learn(gate, FAILED, T0)
    assert health is not None and health.open and health.probe_at == T0 + SCHEDULE[0]
    assert health.failing_since == T0


def test_a_failure_soon_after_a_success_leaves_the_circuit_closed():
    gate = Gate(endpoint(), T0)
    assert learn(gate, OK, T0) is None  # nothing changed: nothing to write
    health = learn(gate, FAILED, T0 + CIRCUIT_WINDOW - 1)
    assert health is not None and not health.open and health.failing_since is not None
    assert learn(gate, OK, T0 + CIRCUIT_WINDOW) == EndpointHealth()


def test_an_open_circuit_lets_one_probe_at_a_time_on_the_schedules_pace():
    gate = Gate(endpoint(rate_limit=1000), T0)
    learn(gate, FAILED, T0)
    assert gate.room(T0 + 1) == 0  # before the first probe's time
    assert gate.take(T0 + 5) is True  # the probe
    assert gate.take(T0 + 5) is False  # one at a time
    gate.leave()
    health = learn(gate, FAILED, T0 + 5, probe=True)
    assert health is not None and health.probes == 1 and health.probe_at == T0 + 5 + SCHEDULE[1]
    # A failure of an attempt that was not the probe does not move the pace.
    assert learn(gate, FAILED, T0 + 6) is None


def test_the_first_success_closes_the_circuit_and_the_backlog_drains_at_a_pace():
    gate = Gate(endpoint(), T0)
    learn(gate, FAILED, T0)
    assert gate.take(T0 + 5) is True
    gate.leave()
    assert learn(gate, OK, T0 + 5, probe=True) == EndpointHealth()
    # No rate limit of its own: a slow start, not all at once.
    assert passed_in(gate, T0 + 5, 1) <= RECOVERY_RATE * 2 + 2
    assert gate.room(T0 + 120) is None  # and, after it, no bound


def test_410_disables_at_once_and_so_does_failing_past_disable_after():
    gate = Gate(endpoint(), T0)
    health = learn(gate, GONE, T0)
    assert health is not None and health.disabled_at == T0 and "410" in health.disabled_reason
    assert gate.unusable() is not None and gate.room(T0) is None

    gate = Gate(endpoint(), T0)
    learn(gate, FAILED, T0)
    health = gate.learn(FAILED, T0 + 100, False, SCHEDULE, disable_after=100)
    assert health is not None and health.disabled_at == T0 + 100
    assert "no attempt succeeded since" in health.disabled_reason


def test_a_change_through_the_api_resets_the_health_the_gate_keeps():
    gates = Gates()
    gate = gates.of(endpoint(), T0)
    learn(gate, FAILED, T0)
    assert gate.health.open
    assert gates.rooms(T0 + 1)[0] == ["ep_1"]  # passed over: the circuit is open
    gates.changed(replace(endpoint(), rate_limit=7, updated_at=T0 + 1))
    assert not gate.health.open and gate.endpoint.rate_limit == 7
    closed, room = gates.rooms(T0 + 1)
    assert closed == [] and room["ep_1"] >= 1
    # A copy read before that change does not undo it.
    assert gates.of(endpoint(), T0 + 2) is gate and gate.endpoint.rate_limit == 7
