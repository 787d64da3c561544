"""Standard Webhooks signing and verification (https://www.standardwebhooks.com).

A webhook carries `webhook-id`, `webhook-timestamp` and `webhook-signature`.
The signature covers "{id}.{timestamp}.{body}", so a receiver learns that we
sent the body, that nobody changed it, and, through the timestamp, that it is
not an old request replayed later.

Secrets say what they are by their prefix: `whsec_` (shared HMAC-SHA256
secret, signs `v1`), `whsk_` (ed25519 private key, signs `v1a`), `whpk_`
(ed25519 public key, verifies `v1a` only). `sign` and `verify` are pure and
need nothing of aiohttp; the aiohttp decorator and middleware for receivers are
in `dispatcher.receiver`, and importable from here as before.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
PRIVATE_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"

# Digits only, and few enough that int() never meets a pathological string.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")

Signatures = list[tuple[str, bytes]]


class WebhookVerificationError(ValueError):
    """The webhook could not be verified."""


def generate_secret() -> str:
    """A new shared secret: 24 random bytes, as the Standard Webhooks spec asks."""
    return SECRET_PREFIX + _b64(secrets.token_bytes(24))


def generate_signing_key() -> tuple[str, str]:
    """A new ed25519 pair `(whsk_…, whpk_…)`: we keep the first, receivers get the second."""
    private = Ed25519PrivateKey.generate()
    return PRIVATE_KEY_PREFIX + _b64(private.private_bytes_raw()), _public_text(private)


def public_key_of(private: str) -> str:
    """The `whpk_…` that verifies what the `whsk_…` key `private` signs."""
    key = _parse_key(private)
    if not isinstance(key, _Ed25519Key) or key.private is None:
        raise ValueError(f"expected a {PRIVATE_KEY_PREFIX} private key")
    return _public_text(key.private)


def sign(
    secret: str | Sequence[str],
    msg_id: str,
    timestamp: int | datetime,
    body: bytes | str,
) -> dict[str, str]:
    """The three `webhook-*` headers for one attempt to send `body`.

    Several secrets (a rotation) give one signature each, space-separated, in
    order, so receivers holding either the old or the new secret accept it.
    A naive datetime is taken as UTC, as the reference libraries do.
    """
    keys = parse_keys(secret)
    seconds = _unix_seconds(timestamp)
    content = _signed_content(msg_id, seconds, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": " ".join(key.sign(content) for key in keys),
    }


def verify(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> Any:
    """Check a received webhook and return its parsed JSON body.

    Raises WebhookVerificationError when a header is missing or malformed,
    the timestamp is more than `tolerance` seconds from `now` (either way), no
    signature matches any of the secrets, or the body is not JSON. A secret
    that cannot be parsed is the caller's mistake and raises plain ValueError.
    """
    return verify_parsed(parse_keys(secret), headers, body, tolerance, now)


class _HmacKey:
    version = "v1"

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    def sign(self, content: bytes) -> str:
        return f"v1,{_b64(self._digest(content))}"

    def matches(self, content: bytes, signatures: Signatures) -> bool:
        expected = self._digest(content)
        return any(
            hmac.compare_digest(expected, sig) for version, sig in signatures if version == "v1"
        )

    def _digest(self, content: bytes) -> bytes:
        return hmac.digest(self._raw, content, "sha256")  # the one-call, C path


class _Ed25519Key:
    version = "v1a"

    def __init__(self, public: Ed25519PublicKey, private: Ed25519PrivateKey | None) -> None:
        self.public = public
        self.private = private

    def sign(self, content: bytes) -> str:
        if self.private is None:
            raise ValueError(f"a {PUBLIC_KEY_PREFIX} public key cannot sign; use the private key")
        return f"v1a,{_b64(self.private.sign(content))}"

    def matches(self, content: bytes, signatures: Signatures) -> bool:
        for version, sig in signatures:
            if version != "v1a" or len(sig) != 64:
                continue
            try:
                self.public.verify(sig, content)
            except InvalidSignature:
                continue
            return True
        return False


# A parsed secret or key: what `parse_keys` gives and `verify_parsed` takes.
Key = _HmacKey | _Ed25519Key


def parse_keys(secret: str | Sequence[str]) -> list[Key]:
    """The keys a secret (or several, during a rotation) names, parsed once;
    ValueError for one that is not a `whsec_`, `whsk_` or `whpk_` key."""
    if isinstance(secret, str):
        keys = [_parsed(secret)]
    else:
        keys = [_parsed(s) if isinstance(s, str) else _parse_key(s) for s in secret]
    if not keys:
        raise ValueError("no secret given")
    return keys


@functools.lru_cache(maxsize=1024)
def _parsed(secret: str) -> Key:
    """A secret parsed once: every webhook of a tenant is signed with the same ones."""
    return _parse_key(secret)


def _parse_key(secret: str) -> Key:
    # Messages name the expected form, never the secret: they end up in logs.
    if not isinstance(secret, str):
        raise TypeError("a secret must be a str")
    secret = secret.strip()
    if secret.startswith(SECRET_PREFIX):
        raw = _b64decode(secret, SECRET_PREFIX)
        if not raw:
            raise ValueError(f"the {SECRET_PREFIX} secret is empty")
        return _HmacKey(raw)
    if secret.startswith(PRIVATE_KEY_PREFIX):
        private = Ed25519PrivateKey.from_private_bytes(_b64decode(secret, PRIVATE_KEY_PREFIX, 32))
        return _Ed25519Key(private.public_key(), private)
    if secret.startswith(PUBLIC_KEY_PREFIX):
        public = Ed25519PublicKey.from_public_bytes(_b64decode(secret, PUBLIC_KEY_PREFIX, 32))
        return _Ed25519Key(public, None)
    prefixes = ", ".join((SECRET_PREFIX, PRIVATE_KEY_PREFIX, PUBLIC_KEY_PREFIX))
    raise ValueError(f"a secret must start with one of {prefixes}")


def _b64decode(secret: str, prefix: str, size: int | None = None) -> bytes:
    encoded = secret.removeprefix(prefix)
    # Tolerate missing padding: some providers print secrets without it.
    encoded += "=" * (-len(encoded) % 4)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the {prefix} secret is not valid base64") from exc
    if size is not None and len(raw) != size:
        raise ValueError(f"a {prefix} key must hold {size} bytes")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _public_text(private: Ed25519PrivateKey) -> str:
    return PUBLIC_KEY_PREFIX + _b64(private.public_key().public_bytes_raw())


def _unix_seconds(timestamp: int | datetime) -> int:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        return math.floor(timestamp.timestamp())
    return math.floor(timestamp)


def _signed_content(msg_id: str, seconds: int, body: bytes | str) -> bytes:
    raw = body.encode() if isinstance(body, str) else bytes(body)
    return f"{msg_id}.{seconds}.".encode() + raw


def verify_parsed(
    keys: list[Key],
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: float,
    now: float | None,
) -> Any:
    """`verify` with keys `parse_keys` gave: what a receiver that checks many webhooks uses."""
    msg_id, seconds, signature_header = _read_headers(headers)
    age = (time.time() if now is None else now) - seconds
    if age > tolerance:
        raise WebhookVerificationError(f"webhook-timestamp is too old ({age:.0f}s ago)")
    if age < -tolerance:
        raise WebhookVerificationError(f"webhook-timestamp is too new ({-age:.0f}s ahead)")

    signatures = _parse_signatures(signature_header)
    wanted = {key.version for key in keys}
    if not wanted & {version for version, _ in signatures}:
        names = " or ".join(sorted(wanted))
        raise WebhookVerificationError(f"webhook-signature has no valid {names} signature")
    content = _signed_content(msg_id, seconds, body)
    if not any(key.matches(content, signatures) for key in keys):
        raise WebhookVerificationError("no matching signature in webhook-signature")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise WebhookVerificationError("the body is not valid JSON") from exc


def _read_headers(headers: Mapping[str, str]) -> tuple[str, int, str]:
    # A plain dict is case-sensitive; HTTP header names are not.
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        lowered.setdefault(name.lower(), value)
    found = []
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        value = lowered.get(name, "").strip()
        if not value:
            raise WebhookVerificationError(f"missing {name} header")
        found.append(value)
    msg_id, timestamp, signatures = found
    if not _TIMESTAMP.fullmatch(timestamp):
        raise WebhookVerificationError("malformed webhook-timestamp header: expected unix seconds")
    return msg_id, int(timestamp), signatures


def _parse_signatures(header: str) -> Signatures:
    """`(version, raw bytes)` for each readable entry of `webhook-signature`.

    Unreadable entries are skipped, not fatal: the spec lets a sender list
    versions a receiver does not know yet next to the ones it does.
    """
    parsed = []
    for entry in header.split():
        version, comma, encoded = entry.partition(",")
        if not comma or not encoded:
            continue
        try:
            parsed.append((version, base64.b64decode(encoded, validate=True)))
        except binascii.Error:
            continue
    return parsed


# What receivers have always imported from here; their home is dispatcher.receiver
# (aiohttp glue), loaded only when asked for, so that signing needs no aiohttp.
_RECEIVER_NAMES = {"WEBHOOK", "Handler", "require_signature", "signature_middleware"}

__all__ = [
    "Key",
    "PRIVATE_KEY_PREFIX",
    "PUBLIC_KEY_PREFIX",
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "generate_secret",
    "generate_signing_key",
    "parse_keys",
    "public_key_of",
    "sign",
    "verify",
    "verify_parsed",
    *sorted(_RECEIVER_NAMES),
]


def __getattr__(name: str) -> Any:
    if name in _RECEIVER_NAMES:
        from dispatcher import receiver

        return getattr(receiver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
