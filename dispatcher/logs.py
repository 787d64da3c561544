"""Logging: text for people, or one JSON object per line for machines."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

# Attributes every LogRecord has; anything else was passed in `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


# What a secret of ours looks like, wherever a line came from (aiohttp echoing a
# request line with ?token=, a library's traceback). Defence in depth: our own
# lines never carry one.
SECRET = re.compile(r"(dk_|whsec_|whsk_)[A-Za-z0-9_\-+/=]{6,}|(token=)[^&\s'\"]+")


def redact(text: str) -> str:
    return SECRET.sub(lambda m: f"{m.group(1) or m.group(2)}***", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            line["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items() if k != "action")
        return f"{text} {extras}" if extras else text


def configure(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # At DEBUG aiosqlite logs every statement with its parameters: payloads,
    # results and signing secrets. Never below WARNING.
    logging.getLogger("aiosqlite").setLevel(max(logging.WARNING, root.level))


class AccessLogger(AbstractAccessLogger):
    """One line per request, without the query string: stream URLs may carry `?token=<key>`."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "http.request",
            extra={
                "action": "http.request",
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(time * 1000, 1),
            },
        )
