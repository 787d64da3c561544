"""One root exception; each subclass carries the HTTP status it is answered with.

The API's problem middleware turns any DispatcherError into an RFC 9457
`application/problem+json` answer, so code below the API raises these and
never builds responses itself.
"""

from __future__ import annotations

from typing import Any


class DispatcherError(Exception):
    """Something went wrong in dispatcher."""

    status: int = 500
    title: str = "Internal Server Error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or (self.__doc__ or self.title).strip()
        self.extra = extra
        super().__init__(self.detail)


class BadRequest(DispatcherError):
    """The request body is not valid JSON."""

    status = 400
    title = "Bad Request"


class Unauthorized(DispatcherError):
    """A valid API key is required: send `Authorization: Bearer <key>`."""

    status = 401
    title = "Unauthorized"


class Forbidden(DispatcherError):
    """This action needs an admin key."""

    status = 403
    title = "Forbidden"


class NotFound(DispatcherError):
    """No such object."""

    status = 404
    title = "Not Found"


class Conflict(DispatcherError):
    """The request conflicts with the current state of the object."""

    status = 409
    title = "Conflict"


class PayloadTooLarge(DispatcherError):
    """The request body is larger than this server accepts."""

    status = 413
    title = "Payload Too Large"


class UnsupportedMediaType(DispatcherError):
    """The request body must be `application/json`."""

    status = 415
    title = "Unsupported Media Type"


class Invalid(DispatcherError):
    """The request is well-formed but breaks a rule."""

    status = 422
    title = "Unprocessable Content"

    def __init__(self, detail: str | None = None, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail, errors=errors or [])


class Unavailable(DispatcherError):
    """The service cannot take this now; try again later."""

    status = 503
    title = "Service Unavailable"

    def __init__(self, detail: str | None = None, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class QueueFull(Unavailable):
    """Too much work is queued; try again later."""


# Seconds a client is told to wait when the database cannot be written now.
STORE_RETRY_AFTER = 5


class StoreUnavailable(Unavailable):
    """The database cannot be written now (full, read-only or busy); nothing was written."""


class BlockedAddress(DispatcherError):
    """The address is not public and not in DISPATCHER_ALLOW_NETWORKS."""

    status = 422
    title = "Unprocessable Content"


class TooManyRequests(DispatcherError):
    """This tenant has too many requests in progress; try again when some have ended."""

    status = 429
    title = "Too Many Requests"


class StartupError(DispatcherError):
    """The service cannot start as it is configured; the message says what to change."""

    title = "Startup Error"
