"""Repeats: a line written in a tight loop is let through a few times a window, then counted.

An accept() failing once the process is out of file descriptors would
otherwise fill the disk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher.log_records import extras

REPEAT_LIMIT = 10  # identical lines written per window; the rest are counted
REPEAT_WINDOW = 10.0  # seconds
REPEAT_KEYS = 1024  # distinct lines tracked at once: the limiter's own memory is bounded
SUPPRESSED = "log.suppressed"
_TIMER_FLOOR = 0.05  # seconds


@dataclass(slots=True)
class _Window:
    logger: str
    template: str
    opened: float
    level: int
    seen: int = 0


def _identity(record: logging.LogRecord) -> int:
    # The template, not the formatted message: "Error handling request from %s" is one
    # line whichever peer it names. Extras count, though: "delivery.failed" for two
    # deliveries are two lines, each worth writing.
    given = tuple(extras(record).items())
    try:
        return hash((record.name, record.levelno, str(record.msg), given))
    except TypeError:  # a value that cannot be hashed: its text can
        return hash((record.name, record.levelno, str(record.msg), repr(given)))


class RepeatLimiter(logging.Filter):
    """Lets `limit` identical lines through per `window` seconds, then one line with the count.

    Windows follow the records' own times. A summary is written by the next record
    after its window ends, or by a timer at the end of the window, whichever is first.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        limit: int = REPEAT_LIMIT,
        window: float = REPEAT_WINDOW,
        max_keys: int = REPEAT_KEYS,
    ) -> None:
        super().__init__()
        self._emit, self._limit, self._window, self._max_keys = emit, limit, window, max_keys
        self._windows: dict[int, _Window] = {}  # in the order they opened, oldest first
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "action", None) == SUPPRESSED:
            return True
        with self._lock:
            ended = self._close_ended(record.created)
            window = self._window_for(record, ended)
            window.seen += 1
            allowed = window.seen <= self._limit
            if not allowed:
                window.level = max(window.level, record.levelno)
                self._wake_at(window.opened + self._window)
        self._write(ended)
        return allowed

    @property
    def tracked(self) -> int:
        """How many distinct lines the limiter holds state for (at most `max_keys`)."""
        return len(self._windows)

    def close(self) -> None:
        """Write the counts still held back and stop the timer (at exit)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            ended = [self._summary(w) for w in self._windows.values() if w.seen > self._limit]
            self._windows.clear()
        self._write(ended)

    def _window_for(self, record: logging.LogRecord, ended: list[logging.LogRecord]) -> _Window:
        key = _identity(record)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self._max_keys:
                oldest = self._windows.pop(next(iter(self._windows)))
                if oldest.seen > self._limit:
                    ended.append(self._summary(oldest))
            template = str(record.msg)[:200]
            window = _Window(record.name, template, record.created, record.levelno)
            self._windows[key] = window
        return window

    def _close_ended(self, now: float) -> list[logging.LogRecord]:
        ended = []
        while self._windows:
            key, first = next(iter(self._windows.items()))
            # A clock set back by more than a window also ends it; a few ms of
            # disorder between threads does not.
            if first.opened - self._window < now < first.opened + self._window:
                break
            del self._windows[key]
            if first.seen > self._limit:
                ended.append(self._summary(first))
        return ended

    def _wake_at(self, when: float) -> None:
        # One timer at most; when it fires it sets the next. Daemon: never holds the exit.
        # The floor keeps a window that threads opened out of order from spinning it.
        if self._timer is None:
            delay = max(_TIMER_FLOOR, when - time.time())
            self._timer = threading.Timer(delay, self._on_timer)
            self._timer.daemon = True
            self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            ended = self._close_ended(time.time())
            held = [w.opened + self._window for w in self._windows.values() if w.seen > self._limit]
            if held:
                self._wake_at(min(held))
        self._write(ended)

    def _summary(self, window: _Window) -> logging.LogRecord:
        record = logging.LogRecord(window.logger, window.level, "", 0, SUPPRESSED, (), None)
        record.action = SUPPRESSED
        record.suppressed = window.seen - self._limit
        record.window_seconds = self._window
        record.repeated = " ".join(window.template.split())[:120]
        return record

    def _write(self, records: list[logging.LogRecord]) -> None:
        # Outside the lock: the handler runs the filters (this one too) again.
        for record in records:
            self._emit(record)
