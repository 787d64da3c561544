"""A line repeated in a tight loop is written a few times per window, then counted."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from dispatcher import logs
from tests.conftest import wait_for

ACCEPT_FAILED = "socket.accept() out of system resource\nsocket: <fd=6>"


@contextlib.contextmanager
def configured(log_format: str = "text") -> Iterator[logging.Handler]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure(log_format, "INFO")
    [handler] = root.handlers
    try:
        yield handler
    finally:
        handler.close()  # stops the limiter's timer
        root.handlers[:] = handlers
        root.setLevel(level)


def later(log: logging.Logger, seconds: float, msg: str) -> None:
    """Log `msg` as if `seconds` had passed, without waiting for them."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, msg, (), None)
    record.created += seconds
    log.handle(record)


def test_ten_thousand_identical_lines_are_ten_then_one_count(capsys):
    log = logging.getLogger("asyncio")
    with configured():
        started = time.monotonic()
        for _ in range(10_000):
            log.error(ACCEPT_FAILED)
        flood = capsys.readouterr().err
        later(log, logs.REPEAT_WINDOW + 1, ACCEPT_FAILED)
        after = capsys.readouterr().err.splitlines()
        took = time.monotonic() - started

    assert flood.count("socket.accept() out of system resource") == logs.REPEAT_LIMIT
    [summary, again] = [line for line in after if " asyncio " in line]
    assert "log.suppressed" in summary
    assert f"suppressed={10_000 - logs.REPEAT_LIMIT}" in summary
    assert "socket.accept() out of system resource" in summary
    assert "socket.accept() out of system resource" in again
    assert took < 5, took


def test_the_template_counts_not_its_arguments(capsys):
    log = logging.getLogger("aiohttp.server")
    with configured():
        for n in range(100):
            log.error("Error handling request from %s", f"10.0.0.{n}")
    *lines, summary = capsys.readouterr().err.splitlines()

    assert len(lines) == logs.REPEAT_LIMIT
    # Closing the handler (logging does at exit) writes the count still held back.
    assert "log.suppressed suppressed=90 " in summary


def test_lines_about_different_things_are_all_written(capsys):
    log = logging.getLogger("dispatcher.delivery")
    with configured("json"):
        for n in range(100):
            log.warning("delivery.failed", extra={"action": "delivery.failed", "id": f"msg_{n}"})
    lines = capsys.readouterr().err.splitlines()

    assert len(lines) == 100


async def test_the_count_is_written_when_the_window_ends_without_another_line():
    written: list[logging.LogRecord] = []
    limiter = logs.RepeatLimiter(written.append, limit=3, window=0.2)
    try:
        for _ in range(50):
            record = logging.LogRecord("flood", logging.ERROR, "", 0, "same again", (), None)
            limiter.filter(record)

        # No record follows: the limiter's own timer writes the count.
        [summary] = await wait_for(lambda: [r for r in written if r.msg == logs.SUPPRESSED])
    finally:
        limiter.close()

    assert summary.suppressed == 47
    assert summary.name == "flood"
    assert summary.levelno == logging.ERROR


def test_the_limiter_tracks_a_bounded_number_of_lines():
    written: list[logging.LogRecord] = []
    limiter = logs.RepeatLimiter(written.append, limit=1, max_keys=50)
    try:
        for n in range(5_000):
            record = logging.LogRecord("many", logging.ERROR, "", 0, f"line {n}", (), None)
            assert limiter.filter(record)
            assert limiter.filter(record) is False  # its repeat is held back...

        assert limiter.tracked <= 50
        # ...and counted when it is forgotten: nothing is lost without a trace.
        assert sum(r.suppressed for r in written) == 5_000 - 50
    finally:
        limiter.close()
    assert sum(r.suppressed for r in written) == 5_000
