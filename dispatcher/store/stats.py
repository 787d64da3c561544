"""What the store holds now, counted for the metrics at each scrape."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StoreStats:
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, status) -> count
    oldest_queued_at: float | None = None  # run_at of the oldest due queued job
    deliveries: dict[str, int] = field(default_factory=dict)  # pending, failed -> count
    endpoints_disabled: int = 0
    circuits_open: int = 0
