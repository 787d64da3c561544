"""Prometheus metrics: counted as work happens, and read from the store at each scrape.

Every name starts with `dispatcher_`. Labels are bounded by construction: job
types are the registered handlers' (an unknown type is refused at submission),
channels, statuses and outcomes are fixed sets. No tenant, URL, secret or id
is ever a label. Each app has its own registry, so two apps in one process
(tests) never share counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dispatcher.store.stats import StoreStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

RUN_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self._submitted = Counter(
            "dispatcher_jobs_submitted", "Jobs accepted, by type.", ["type"], registry=registry
        )
        self._finished = Counter(
            "dispatcher_jobs_finished",
            "Jobs that ended, by type and final status.",
            ["type", "status"],
            registry=registry,
        )
        self._run_seconds = Histogram(
            "dispatcher_job_run_seconds",
            "Seconds from a job's start to its end, by type.",
            ["type"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self._attempts = Counter(
            "dispatcher_delivery_attempts",
            "Delivery attempts, by channel and outcome (succeeded, failed).",
            ["channel", "outcome"],
            registry=registry,
        )
        self._attempt_seconds = Histogram(
            "dispatcher_delivery_attempt_seconds",
            "Seconds one delivery attempt took, by channel.",
            ["channel"],
            buckets=ATTEMPT_BUCKETS,
            registry=registry,
        )
        self._batch = Histogram(
            "dispatcher_store_commit_writes",
            "Writes committed together in one transaction (group commit).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self._jobs = Gauge(
            "dispatcher_jobs", "Jobs queued or running now, by type and status.",
            ["type", "status"], registry=registry,
        )  # fmt: skip
        self._queue_depth = Gauge("dispatcher_queue_depth", "Jobs queued now.", registry=registry)
        self._oldest = Gauge(
            "dispatcher_oldest_queued_job_age_seconds",
            "Age of the oldest queued job that is due (0 when none is).",
            registry=registry,
        )
        self._deliveries = Gauge(
            "dispatcher_deliveries",
            "Deliveries now, by status (pending, failed).",
            ["status"],
            registry=registry,
        )
        self._subscribers = Gauge(
            "dispatcher_stream_subscribers",
            "Open subscriptions: job (WebSocket, SSE, long-poll) and tenant (dashboards).",
            ["kind"],
            registry=registry,
        )
        self._disabled = Gauge(
            "dispatcher_endpoints_disabled", "Endpoints disabled now.", registry=registry
        )
        self._open = Gauge(
            "dispatcher_endpoint_circuits_open", "Endpoints whose circuit is open.",
            registry=registry,
        )  # fmt: skip

    # Counted as it happens

    def job_submitted(self, job_type: str) -> None:
        self._submitted.labels(job_type).inc()

    def job_finished(self, job_type: str, status: str, ran_for: float | None) -> None:
        self._finished.labels(job_type, status).inc()
        if ran_for is not None:
            self._run_seconds.labels(job_type).observe(max(0.0, ran_for))

    def attempt(self, channel: str, ok: bool, seconds: float) -> None:
        self._attempts.labels(channel, "succeeded" if ok else "failed").inc()
        self._attempt_seconds.labels(channel).observe(seconds)

    def committed(self, writes: int) -> None:
        self._batch.observe(writes)

    # Read at each scrape

    def render(self, stats: StoreStats, subscribers: dict[str, int], at: float) -> bytes:
        self._jobs.clear()
        queued = 0
        for (job_type, status), count in stats.jobs.items():
            self._jobs.labels(job_type, status).set(count)
            queued += count if status == "queued" else 0
        self._queue_depth.set(queued)
        oldest = stats.oldest_queued_at
        self._oldest.set(max(0.0, at - oldest) if oldest is not None else 0)
        for status in ("pending", "failed"):
            self._deliveries.labels(status).set(stats.deliveries.get(status, 0))
        for kind, count in subscribers.items():
            self._subscribers.labels(kind).set(count)
        self._disabled.set(stats.endpoints_disabled)
        self._open.set(stats.circuits_open)
        return generate_latest(self.registry)
