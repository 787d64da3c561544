"""API keys: made random, stored hashed, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from dispatcher.ids import now
from dispatcher.store.base import Store
from dispatcher.store.records import ApiKey

KEY_PREFIX = "dk_"
PREFIX_LENGTH = 12
ADMIN_TENANT = "admin"


def bootstrap_prefix(key: str) -> str:
    """The start of DISPATCHER_ADMIN_KEY that names it in attempts' `by`.

    Tenants read `by`, and the operator may have chosen a short key: at most a
    third of it (and at most 12 characters) is shown, never enough to guess it.
    """
    return key[: min(PREFIX_LENGTH, len(key) // 3)]


# A verified key is trusted this long before the store is asked again, so a
# revocation reaches other instances within this time.
CACHE_SECONDS = 5.0
# last_used_at is written at most this often per key: a write per request would
# put every read on the commit path.
TOUCH_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    admin: bool
    prefix: str

    def scope(self) -> str | None:
        """The tenant whose objects this key may read; None for all (admin)."""
        return None if self.admin else self.tenant


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is as safe as a slow one here.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(tenant: str, admin: bool) -> tuple[str, ApiKey]:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        prefix=key[:PREFIX_LENGTH],
        key_hash=hash_key(key),
        tenant=tenant,
        admin=admin,
        created_at=now(),
        last_used_at=None,
    )
    return key, record


class Authenticator:
    def __init__(self, store: Store, bootstrap_key: str | None) -> None:
        self._store = store
        self._bootstrap = bootstrap_key
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._touched: dict[str, float] = {}

    async def authenticate(self, token: str) -> Principal | None:
        if not token.isascii():
            return None  # keys are ASCII; anything else cannot match (nor be hashed as is)
        if self._bootstrap and hmac.compare_digest(token.encode(), self._bootstrap.encode()):
            return Principal(ADMIN_TENANT, True, bootstrap_prefix(token))
        if not token.startswith(KEY_PREFIX):
            return None
        digest = hash_key(token)
        cached = self._cache.get(digest)
        at = now()
        if cached and cached[1] > at:
            principal = cached[0]
        else:
            record = await self._store.find_key(token[:PREFIX_LENGTH])
            if record is None or not hmac.compare_digest(record.key_hash, digest):
                return None
            principal = Principal(record.tenant, record.admin, record.prefix)
            self._cache[digest] = (principal, at + CACHE_SECONDS)
        if at - self._touched.get(principal.prefix, 0) > TOUCH_EVERY:
            self._touched[principal.prefix] = at
            await self._store.touch_key(principal.prefix, at)
        return principal

    async def revoked(self, prefix: str) -> bool:
        """Whether the key with this prefix is gone (the bootstrap key never is)."""
        if self._bootstrap and prefix == bootstrap_prefix(self._bootstrap):
            return False
        return await self._store.find_key(prefix) is None

    def forget(self, prefix: str) -> None:
        """Drop a revoked key from this process's cache at once."""
        self._cache = {d: c for d, c in self._cache.items() if c[0].prefix != prefix}
        self._touched.pop(prefix, None)
