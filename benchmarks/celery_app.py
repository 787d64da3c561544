"""Celery + Redis doing what a dispatcher delivery does: one signed POST per task.

The worker runs as `celery -A benchmarks.celery_app worker --pool prefork -c 2`;
each of its processes keeps one HTTP session, as a Celery user would.
"""

from __future__ import annotations

import requests
from celery import Celery

BROKER = "redis://127.0.0.1:6379/15"

app = Celery("bench", broker=BROKER)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)

_session: requests.Session | None = None


@app.task(name="bench.post")
def post(url: str, body: str, secret: str) -> None:
    global _session
    from benchmarks.bodies import signed

    if _session is None:
        _session = requests.Session()
    data = body.encode()
    _session.post(url, data=data, headers=signed(secret, data), timeout=30).raise_for_status()
