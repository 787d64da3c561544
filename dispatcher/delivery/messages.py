"""The words of a notification: a delivery's fixed event body as an email or an SMS text.

Pure functions, no I/O. Every field of a job may come from a tenant (its type,
result, error, callback URL), so none of them is ever written into a header by
hand: headers are set on an `EmailMessage` under the strict default policy,
which refuses line breaks, and the only job field that reaches a header (the
id, in the subject) is first escaped onto one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import errors
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from dispatcher.delivery.plan import CALLBACK_FAILED

# A job text fits one SMS segment; a callback failure may take two.
MAX_JOB_SMS = 160
MAX_CALLBACK_SMS = 320
# A result bigger than this is cut in the email; the link shows the whole job.
MAX_RESULT_CHARS = 20_000

# Message-ID parts: RFC 5322 dot-atom text, kept to what ids and hostnames use.
_ID_PART = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True, slots=True)
class _Event:
    type: str
    job: dict[str, Any]
    callback: dict[str, Any] | None


def mailbox(value: str) -> Address:
    """One address with a domain (`a@b` or `Name <a@b>`); ValueError for anything else."""
    if "\r" in value or "\n" in value:
        raise ValueError("an email address may not contain a line break")
    probe = EmailMessage()
    try:
        probe["To"] = value
        header = probe["To"]
    except (IndexError, TypeError) as exc:  # the stdlib parser trips on some inputs ("a@")
        raise ValueError(f"not an email address: {value!r}") from exc
    addresses = header.addresses
    # A non-ASCII local part is valid with SMTPUTF8, which aiosmtplib asks the server for.
    defects = [d for d in header.defects if not isinstance(d, errors.NonASCIILocalPartDefect)]
    if defects or len(addresses) != 1 or not addresses[0].domain:
        raise ValueError(f"not a single email address: {value!r}")
    return addresses[0]


def message_id(delivery_id: str, domain: str) -> str:
    """`<msg_…@domain>`: the same on every attempt, so receivers can drop duplicates."""
    if not _ID_PART.fullmatch(delivery_id) or not _ID_PART.fullmatch(domain):
        raise ValueError("a Message-ID is built from a plain delivery id and domain")
    return f"<{delivery_id}@{domain}>"


def email_message(
    body: bytes,
    *,
    delivery_id: str,
    sender: str,
    recipient: str,
    public_url: str | None,
    message_id_domain: str | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """The email for one delivery. ValueError for a bad address or a body that is not an event."""
    from_address = mailbox(sender)
    mailbox(recipient)
    event = _parse(body)
    if event.callback is not None:
        subject, text = _callback_email(event, public_url)
    else:
        subject, text = _job_email(event, public_url)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(date or datetime.now(UTC))
    domain = message_id_domain or _id_domain(from_address.domain)
    message["Message-ID"] = message_id(delivery_id, domain)
    # RFC 3834: keeps vacation responders from answering a notification.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    return message


def sms_text(body: bytes) -> str:
    """A short text: `Job job_… succeeded`, or which webhook failed and why."""
    event = _parse(body)
    job_id = _compact(event.job.get("id"))
    if event.callback is None:
        text = f"Job {job_id} {_compact(_status(event))}"
        error = event.job.get("error")
        if isinstance(error, dict) and error.get("type"):
            text += f": {_compact(error['type'])}"
        return _cut(text, MAX_JOB_SMS)
    callback = event.callback
    url = _compact(_display_url(callback.get("url"), short=True))
    text = f"Job {job_id}: webhook to {url} failed: {_compact(_last_error(callback))}"
    return _cut(text, MAX_CALLBACK_SMS)


def _id_domain(domain: str) -> str:
    """The sender's domain as Message-ID text: IDNA for a Unicode one, never a literal."""
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"
    return ascii_domain if _ID_PART.fullmatch(ascii_domain) else "localhost"


def _parse(body: bytes) -> _Event:
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the delivery body is not JSON: {exc}") from exc
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise ValueError("the delivery body is not a job event")
    callback = event.get("callback")
    if event.get("type") == CALLBACK_FAILED and not isinstance(callback, dict):
        raise ValueError("a callback failure event without its callback")
    return _Event(
        type=str(event.get("type") or ""),
        job=event["data"],
        callback=callback if event.get("type") == CALLBACK_FAILED else None,
    )


def _job_email(event: _Event, public_url: str | None) -> tuple[str, str]:
    job = event.job
    job_id = _one_line(job.get("id"))
    status = _one_line(_status(event))
    lines = [
        f"Job {job_id} {status}.",
        "",
        f"ID:       {job_id}",
        f"Type:     {_one_line(job.get('type'))}",
        f"Status:   {status}",
    ]
    if job.get("finished_at"):
        lines.append(f"Finished: {_one_line(job['finished_at'])}")
    # A failed or cancelled job has no result to show, only its error.
    if job.get("result") is not None or not job.get("error"):
        lines += ["", "Result:", _json_block(job.get("result"))]
    if job.get("error"):
        lines += ["", f"Error: {_error_text(job['error'])}"]
    if public_url:
        lines += ["", f"Details: {_api_link(public_url, 'jobs', job_id)}"]
    return f"Job {job_id} {status}", "\n".join(lines) + "\n"


def _callback_email(event: _Event, public_url: str | None) -> tuple[str, str]:
    job, callback = event.job, event.callback or {}
    job_id = _one_line(job.get("id"))
    webhook_id = _one_line(callback.get("delivery_id"))
    status_code = callback.get("status_code")
    lines = [
        f"The webhook for job {job_id} failed on every attempt and will not be tried again",
        "unless it is replayed.",
        "",
        f"Job:          {job_id} ({_one_line(job.get('type'))}, {_one_line(_status(event))})",
        f"Webhook URL:  {_one_line(_display_url(callback.get('url')))}",
        f"Delivery:     {webhook_id}",
        f"Last status:  {status_code if status_code is not None else 'no response'}",
        f"Last error:   {_one_line(_last_error(callback))}",
    ]
    if public_url:
        lines += [
            "",
            f"Job:      {_api_link(public_url, 'jobs', job_id)}",
            f"Delivery: {_api_link(public_url, 'deliveries', webhook_id)}",
            f"Replay:   POST {_api_link(public_url, 'deliveries', webhook_id)}/replay",
        ]
    return f"Webhook for job {job_id} failed", "\n".join(lines) + "\n"


def _status(event: _Event) -> str:
    status = event.job.get("status")
    return str(status) if status else event.type.removeprefix("job.")


def _last_error(callback: dict[str, Any]) -> str:
    error = callback.get("error")
    code = callback.get("status_code")
    if error:
        return str(error)
    return f"HTTP {code}" if code is not None else "unknown error"


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        text = f"{kind}: {message}" if kind and message else str(kind or message or "")
    else:
        text = str(error)
    # Multi-line messages stay multi-line, but only ever in the body.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _json_block(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + "\n… (cut; the whole result is in the job)"
    return text


def _api_link(public_url: str, collection: str, object_id: str) -> str:
    return f"{public_url.rstrip('/')}/v1/{collection}/{quote(object_id, safe='')}"


def _display_url(url: Any, *, short: bool = False) -> str:
    """The URL without a password: an email is read in more places than the API.

    `short`, for a text message, leaves out the userinfo and the query entirely
    (either may hold a secret).
    """
    text = str(url or "")
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    host = parts.netloc.rpartition("@")[2]
    if short:
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    if parts.password is None:
        return text
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _one_line(value: Any) -> str:
    """The value on one line: control and line-separator characters written as escapes."""
    text = "" if value is None else str(value)
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def _compact(value: Any) -> str:
    text = "" if value is None else str(value)
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _cut(text: str, limit: int) -> str:
    # "..." rather than "…": one non-GSM character makes the whole SMS UCS-2.
    return text if len(text) <= limit else text[: limit - 3] + "..."
