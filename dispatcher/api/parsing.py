"""Turning requests into validated values: bodies, query strings, cursors."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from dispatcher.errors import BadRequest, Invalid, PayloadTooLarge, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)


def field_errors(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(part) for part in e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False, include_context=False, include_input=False)
    ]


def validate(model: type[M], data: Any, what: str = "request body") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise Invalid(f"the {what} is not valid", field_errors(error)) from error


async def read_json(request: web.Request, max_bytes: int) -> tuple[Any, bytes]:
    """The parsed body and its bytes: 415 unless JSON, 413 past the limit, 400 if malformed."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise UnsupportedMediaType()
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes") from exc
    try:
        # Strict UTF-8: json.loads would also take UTF-16 and UTF-32, and read
        # a surrogate's UTF-8 bytes ("surrogatepass") into a lone surrogate.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        data = _DECODER.decode(text)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadRequest("the body is nested too deeply") from exc
    if LONE_SURROGATE.search(text):
        _refuse_lone_surrogates(data)
    return data, raw


# Python's json reads NaN, Infinity, 1e400 (an infinite float), integers of
# any length, and "\ud800" (half of a UTF-16 pair): none is a value JSON or
# UTF-8 can carry everywhere, and once stored they would make every later
# answer, webhook and email about the job fail.
LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _decoder() -> json.JSONDecoder:
    return json.JSONDecoder(
        parse_constant=_refuse_constant, parse_float=_finite, parse_int=_bounded
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large a number")
    return value


def _bounded(text: str) -> int:
    """An integer, if a double can hold its size (as every JSON reader can take it)."""
    if len(text) > MAX_INT_DIGITS or not math.isfinite(float(text)):
        raise ValueError(f"{text[:20]}... is too large a number")
    return int(text)


# A double's largest finite value has 309 digits.
MAX_INT_DIGITS = 310


def _refuse_lone_surrogates(data: Any) -> None:
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise BadRequest("the body has a lone UTF-16 surrogate (\\ud800-\\udfff)") from exc


async def body(request: web.Request, model: type[M], max_bytes: int) -> tuple[M, Any]:
    data, _ = await read_json(request, max_bytes)
    return validate(model, data), data


def query(request: web.Request, model: type[M]) -> M:
    # `?status=&type=` is how a form says "no filter": an empty value is absent.
    given = {name: value for name, value in request.query.items() if value != ""}
    return validate(model, given, "query string")


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, valid: Any) -> str | None:
    """The position a cursor names; 422 for anything this server did not hand out."""
    if cursor is None:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if not value or not valid(value):
        raise Invalid(
            "the cursor is not valid",
            [{"field": "cursor", "message": "bad cursor", "type": "value_error"}],
        )
    return value


def page_body(items: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": encode_cursor(next_cursor) if next_cursor else None}


# Made once: json.loads with these arguments would make a decoder per request.
_DECODER = _decoder()
