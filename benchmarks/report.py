"""The figures of one run, and the table they are printed as, with the ratios and targets."""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path
from typing import Any

# (section, figure, what it is) in the order printed.
LINES = (
    ("bare", "signed_posts_per_s", "bare aiohttp: signed 1 KB POSTs/s"),
    ("celery", "deliveries_per_s", "Celery (prefork, 2) + Redis: signed POSTs/s"),
    ("dispatcher", "jobs_per_s", "dispatcher end to end: jobs/s (submit → webhook received)"),
    ("dispatcher", "submits_per_s", "dispatcher: durable 202s/s during that run"),
    ("dispatcher", "peak_rss_mb", "dispatcher: peak RSS, MB"),
    ("postgres", "jobs_per_s_1", "PostgreSQL, 1 instance: jobs/s end to end"),
    ("postgres", "jobs_per_s_2", "PostgreSQL, 2 instances, one database: jobs/s end to end"),
    ("postgres", "backlog", "PostgreSQL: one tenant's queued backlog"),
    ("postgres", "submit_ms_empty", "another tenant's submission, empty queue: median ms"),
    ("postgres", "submit_ms_backlog", "another tenant's submission, with that backlog: median ms"),
    ("submits", "bare_202_per_s", "bare aiohttp server answering 202: req/s"),
    ("submits", "durable_202_per_s", "dispatcher durable 202s/s (same requests)"),
    ("latency", "rate_per_s", "steady submit rate (half of end to end), jobs/s"),
    ("latency", "p50_ms", "job finished → callback received, p50 ms"),
    ("latency", "p99_ms", "job finished → callback received, p99 ms"),
    ("claims", "pending", "pending deliveries in the big database"),
    ("claims", "claim_ms_10k", "claim of 64 deliveries, 10,000 pending: median ms"),
    ("claims", "claim_ms_big", "claim of 64 deliveries, big backlog: median ms"),
    ("claims", "passing_ms_big", "claim passing over that backlog (its receiver full): ms"),
    ("claims", "passing_all_ms_big", "the same, once a poll interval, looking at all: ms"),
    ("backlog", "ready_s", "serve on the big backlog: seconds to /readyz"),
    ("backlog", "peak_rss_mb", "serve on the big backlog: peak RSS, MB"),
    ("backlog", "deliveries_per_s", "serve on the big backlog: deliveries/s"),
    ("hanging", "healthy_per_s", "10 % of callbacks hang: healthy webhooks/s"),
    ("restart", "pending", "kill -9 with this many pending deliveries"),
    ("restart", "ready_s", "restart → /readyz, s"),
    ("restart", "first_delivery_s", "restart → first webhook received, s"),
)

# (name, numerator, denominator, target) — figures are (section, figure).
RATIOS = (
    ("end to end ÷ bare", ("dispatcher", "jobs_per_s"), ("bare", "signed_posts_per_s"), "≥ 0.25"),
    ("end to end ÷ Celery", ("dispatcher", "jobs_per_s"), ("celery", "deliveries_per_s"), "≥ 3"),
    (
        "durable 202 ÷ bare 202",
        ("submits", "durable_202_per_s"),
        ("submits", "bare_202_per_s"),
        "≥ 0.6",
    ),
    (
        "PostgreSQL 1 instance ÷ SQLite",
        ("postgres", "jobs_per_s_1"),
        ("dispatcher", "jobs_per_s"),
        "",
    ),
    (
        "PostgreSQL 2 instances ÷ 1",
        ("postgres", "jobs_per_s_2"),
        ("postgres", "jobs_per_s_1"),
        "",
    ),
    (
        "submission behind a backlog ÷ empty",
        ("postgres", "submit_ms_backlog"),
        ("postgres", "submit_ms_empty"),
        "≤ 2",
    ),
    ("claim big ÷ claim 10k", ("claims", "claim_ms_big"), ("claims", "claim_ms_10k"), "≤ 2"),
    (
        "healthy with hangs ÷ end to end",
        ("hanging", "healthy_per_s"),
        ("dispatcher", "jobs_per_s"),
        "≥ 0.8",
    ),
)


class Report:
    def __init__(self) -> None:
        self.figures: dict[str, dict[str, Any]] = {"machine": machine()}
        self.notes: list[str] = []

    def add(self, section: str, name: str, value: Any) -> None:
        self.figures.setdefault(section, {})[name] = value

    def update(self, section: str, values: dict[str, Any]) -> None:
        for name, value in values.items():
            self.add(section, name, value)

    def get(self, section: str, name: str) -> Any:
        return self.figures.get(section, {}).get(name)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def render(self) -> str:
        lines = [" ".join(f"{k}={v}" for k, v in self.figures["machine"].items())]
        changed = {k: v for k, v in sorted(os.environ.items()) if k.startswith("DISPATCHER_")}
        if changed:  # they reach every `serve` the benchmark starts
            lines.append("settings: " + " ".join(f"{k}={v}" for k, v in changed.items()))
        lines.append("")
        for section, name, label in LINES:
            value = self.get(section, name)
            if value is not None:
                lines.append(f"{label:<62} {_number(value):>10}")
        lines.append("")
        for label, top, bottom, target in RATIOS:
            a, b = self.get(*top), self.get(*bottom)
            if a is not None and b:
                aim = f"   target {target}" if target else ""
                lines.append(f"{label:<40} {a / b:>8.2f}{aim}")
        return "\n".join([*lines, "", *self.notes])


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.machine(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": model.replace(" ", "_"),
        "python": platform.python_version(),
        "uvloop": importlib.util.find_spec("uvloop") is not None,
        "orjson": importlib.util.find_spec("orjson") is not None,
    }


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.exists() else []
