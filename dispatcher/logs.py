"""Logging: text for people, or one JSON object per line for machines.

Two filters stand between every record and the stream: `RepeatLimiter`
(log_repeats.py), so a failure that repeats in a tight loop (an accept()
failing once the process is out of file descriptors) cannot fill the disk, and
`RedactSecrets` (here), so no secret reaches the log, whichever library wrote
the line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from dispatcher.log_records import extras, set_extra
from dispatcher.log_repeats import (  # noqa: F401  (part of this module's interface)
    REPEAT_LIMIT,
    REPEAT_WINDOW,
    SUPPRESSED,
    RepeatLimiter,
)

# Redaction

MASK = "***"
# What a credential looks like wherever a line came from (aiohttp echoing a bad
# request line or header, a library's traceback, a repr of a headers dict). Our
# own lines never carry one: this is defence in depth. The lookbehind keeps
# `[a-z_-]*token` from rescanning a long word at every letter. A bare value runs
# past quotes and commas, which a URL may hold: masking too much is the safe side.
_SHAPES = re.compile(
    r"""
    (?P<prefix>dk_|whsec_|whsk_)[A-Za-z0-9_\-+/=]{6,}
    | (?P<userinfo>://[^/\s:@'"]*:)[^@\s/'"]+(?=@)
    | (?P<name>authorization|password|passwd|secret|api[_-]?key|(?<![a-z_-])[a-z_-]*token)
      (?P<sep>\\?["']?\s*(?:[:=]|,(?=\s*\\?["']))\s*)
      (?: (?P<quote>\\?["']) (?:\\.|.)*? (?:(?P=quote)|$)
        | [^\s&#"\\]+ (?:\ [^\s&#"\\]+)? )
    """,
    re.IGNORECASE | re.VERBOSE | re.MULTILINE,
)


_CLUES = ("dk_", "whsec_", "whsk_", "://", "authorization", "passw", "secret", "api", "token")


def _masked(found: re.Match[str]) -> str:
    if found["prefix"]:
        return found["prefix"] + MASK
    if found["userinfo"]:
        return found["userinfo"] + MASK
    quote_mark = found["quote"] or ""
    closing = quote_mark if quote_mark and found[0].endswith(quote_mark) else ""
    return f"{found['name']}{found['sep']}{quote_mark}{MASK}{closing}"


def _spellings(secret: str) -> set[str]:
    """How a secret may be written out: as is, escaped by repr or JSON, percent-encoded."""
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }
    with contextlib.suppress(UnicodeEncodeError):
        forms.add(repr(secret.encode())[2:-1])
    return {form for form in forms if form}


class Redactor:
    """Masks the operator's own secrets, however spelled, and anything shaped like a credential.

    The operator chooses DISPATCHER_ADMIN_KEY and the SMTP and SMS passwords, so
    they may look like anything: no pattern finds them, only their values.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms = {form for secret in secrets if secret for form in _spellings(secret)}
        # Longest first, so that a secret containing another is masked whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def literals(self, text: str) -> str:
        """`text` without the operator's secrets (safe on JSON: only inside its strings)."""
        return self._secrets.sub(MASK, text) if self._secrets is not None else text

    def __call__(self, text: str) -> str:
        return _SHAPES.sub(_masked, self.literals(text))

    def finds(self, text: str) -> bool:
        """Whether `text` holds anything that would be masked."""
        if self._secrets is not None and self._secrets.search(text):
            return True
        # Every credential shape holds one of these: most lines hold none, and
        # looking for them is many times cheaper than the pattern.
        lowered = text.lower()
        if not any(clue in lowered for clue in _CLUES):
            return False
        return _SHAPES.search(text) is not None


# What `redact` uses: credential shapes, and the secrets `configure` was given.
_active = Redactor()


def redact(text: str) -> str:
    return _active(text)


def mask_secrets(text: str) -> str:
    """Only the configured secrets: for a terminal, where a credential shape may be a typo."""
    return _active.literals(text)


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message, traceback, stack and string extras."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = None  # the formatter will report the bad arguments, with the template
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        texts = {name: value for name, value in extras(record).items() if isinstance(value, str)}
        # One scan of all of it: most lines hold nothing to mask, and a scan
        # per field costs more than the search itself.
        whole = "\0".join(
            filter(None, (message, record.exc_text, record.stack_info, *texts.values()))
        )
        if not self.redactor.finds(whole):
            return True
        if message is not None:
            cleaned = self.redactor(message)
            if cleaned != message:
                record.msg, record.args = cleaned, ()
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        for name, value in texts.items():
            set_extra(record, name, self.redactor(value))
        return True


# Formats


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _utc_ms(record: logging.LogRecord) -> str:
    """The record's time as RFC 3339 UTC with milliseconds, as the API writes times."""
    return f"{_utc_second(int(record.created))}.{int(record.msecs):03d}Z"


def _utc_ms_now() -> str:
    at = time.time()
    return f"{_utc_second(int(at))}.{int(at % 1 * 1000):03d}Z"


def _details(record: logging.LogRecord) -> dict[str, Any]:
    """The extras, less `action` where it only repeats the event's name."""
    given = extras(record)
    if given.get("action") == record.getMessage():
        return {k: v for k, v in given.items() if k != "action"}
    return given


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": _utc_ms(record),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            **_details(record),
        }
        if record.exc_info:
            line["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger event key=value …`, then the traceback, if any, on the lines below."""

    def format(self, record: logging.LogRecord) -> str:
        details = " ".join(f"{k}={v}" for k, v in _details(record).items())
        head = f"{_utc_ms(record)} {record.levelname} {record.name} {record.getMessage()}"
        text = f"{head} {details}" if details else head
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


class BriefFormatter(logging.Formatter):
    """One line, no traceback: for the command-line tools, whose user reads a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: the message of a parser's error may quote what was received.
            text += f" ({record.exc_info[0].__name__})"
        printable = "".join(c if c.isprintable() else " " for c in text)
        return " ".join(printable.split())


class _Redacting(logging.Formatter):
    """A last pass over the finished line, for secrets in what the filter could not see."""

    def __init__(self, inner: logging.Formatter, redactor: Redactor) -> None:
        super().__init__()
        self._inner, self._redactor = inner, redactor

    def format(self, record: logging.LogRecord) -> str:
        return self._redactor.literals(self._inner.format(record))


class _Handler(logging.StreamHandler):
    """stderr; at close (logging.shutdown, at exit) the counts still held back."""

    limiter: RepeatLimiter | None = None

    def close(self) -> None:
        if self.limiter is not None:
            self.limiter.close()
        super().close()


def build_handler(
    log_format: str, stream: Any, redactor: Redactor, *, limit_repeats: bool = True
) -> logging.Handler:
    """The handler `configure` installs: formatting, repeat limiting and redaction."""
    return _handler(_formatter(log_format), stream, redactor, limit_repeats)


def _formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def _handler(
    formatter: logging.Formatter, stream: Any, redactor: Redactor, limit_repeats: bool = True
) -> _Handler:
    handler = _Handler(stream)
    handler.setFormatter(_Redacting(formatter, redactor))
    if limit_repeats:
        handler.limiter = RepeatLimiter(handler.handle)
        # Repeats first: a suppressed line costs no redaction.
        handler.addFilter(handler.limiter)
    handler.addFilter(RedactSecrets(redactor))
    return handler


def _install(formatter: logging.Formatter, level: str | int, secrets: Iterable[str]) -> None:
    global _active  # the logging configuration is process-wide; so is what it masks
    _active = Redactor(secrets)
    handler = _handler(formatter, sys.stderr, _active)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)


def configure(log_format: str, level: str, secrets: Iterable[str] = ()) -> None:
    """Log to stderr as `text` or `json`, never writing any of `secrets` (however spelled)."""
    global _json_lines
    _json_lines = log_format == "json"
    _install(_formatter(log_format), level, secrets)
    # A library's warning is a log line too, not a bare line on stderr.
    logging.captureWarnings(True)
    # No line shows its source file, thread or process: skip finding them for
    # every record (the logging documentation's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # At DEBUG aiosqlite logs every statement with its parameters: payloads,
    # results and signing secrets. Never below WARNING.
    logging.getLogger("aiosqlite").setLevel(max(logging.WARNING, logging.getLogger().level))


def configure_brief(secrets: Iterable[str] = ()) -> None:
    """For the command-line tools: warnings and errors, one line each, never a traceback."""
    global _json_lines
    _json_lines = False
    _install(BriefFormatter(), logging.WARNING, secrets)


# Lines the process prints itself (serve's summary, the first admin key, where it
# listens, why it stopped): plain text for people, or, with the json format,
# objects shaped like the log's, so that every line the process writes parses.
_json_lines = False


def say(event: str, text: str, *, error: bool = False, **fields: Any) -> None:
    """Print `text` to stdout (stderr for an `error`), or its JSON form under `event`."""
    if _json_lines:
        level = "ERROR" if error else "INFO"
        head = {"time": _utc_ms_now(), "level": level, "logger": "dispatcher", "event": event}
        text = json.dumps({**head, **fields}, default=str)
    print(text, file=sys.stderr if error else sys.stdout, flush=True)


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
