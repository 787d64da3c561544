"""Signing secrets as the store keeps them: the current one, and those rotated out."""

from __future__ import annotations

import json
from dataclasses import dataclass

# Secrets that sign at once: the current one and those rotated out within their grace.
MAX_LIVE_SECRETS = 10


@dataclass(frozen=True, slots=True)
class SigningSecrets:
    """A tenant's (or endpoint's) secret, and those it replaced while their grace lasts."""

    current: str
    # (secret, signs until), newest first.
    previous: tuple[tuple[str, float], ...] = ()

    def active(self, at: float) -> list[str]:
        """Every secret that signs now, newest first; at most MAX_LIVE_SECRETS."""
        live = [secret for secret, until in self.previous if at < until]
        return [self.current, *live][:MAX_LIVE_SECRETS]

    def rotated(self, new: str, grace_until: float, at: float) -> SigningSecrets:
        """`new` in front; the current secret signs on until `grace_until`, with the
        others still in their grace, as many as may sign at once."""
        kept = [(s, until) for s, until in self.previous if at < until]
        previous = [(self.current, grace_until), *kept][: MAX_LIVE_SECRETS - 1]
        return SigningSecrets(new, tuple(previous))

    def dump_previous(self) -> str | None:
        return json.dumps([list(pair) for pair in self.previous]) if self.previous else None

    @classmethod
    def load(cls, current: str, previous: str | None) -> SigningSecrets:
        pairs = json.loads(previous) if previous else []
        return cls(current, tuple((str(s), float(until)) for s, until in pairs))
