"""What a log record was given in `extra`, picked out once and shared by the filters."""

from __future__ import annotations

import logging
from typing import Any

# Where a record keeps its extras once they were picked out (each filter and
# the formatter ask for them).
_EXTRAS = "_dispatcher_extras"
# Attributes every LogRecord has; anything else was passed in `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    _EXTRAS,
}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """What was passed in `extra` (read-only: `set_extra` changes one)."""
    found: dict[str, Any] | None = record.__dict__.get(_EXTRAS)
    if found is None:
        found = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        record.__dict__[_EXTRAS] = found
    return found


def set_extra(record: logging.LogRecord, name: str, value: Any) -> None:
    setattr(record, name, value)
    extras(record)[name] = value
