"""What `dispatcher serve` says when it starts: enough to see what it is doing, no secret.

Where its database is (a relative SQLite path follows the working directory,
so starting elsewhere silently makes a new, empty one), which job types it
loaded, how much runs at once, and every setting that differs from its
default, by the variable that set it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from yarl import URL

from dispatcher import __version__
from dispatcher.handlers import Registry
from dispatcher.settings import Settings

ENV_PREFIX = "DISPATCHER_"
# Shown elsewhere in the summary.
_SHOWN = {"host", "port", "database_url", "workers", "handlers", "delivery_concurrency"}


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the summary: its event name, its text, and its facts for a JSON log."""

    event: str
    text: str
    fields: dict[str, Any]

    def __str__(self) -> str:
        return self.text


def summary(settings: Settings, registry: Registry) -> list[Line]:
    names = registry.names()
    lines = [
        Line("dispatcher.version", f"dispatcher {__version__}", {"version": __version__}),
        Line(
            "dispatcher.database",
            f"database: {database(settings)}",
            {"database": database(settings)},
        ),
        Line("dispatcher.job_types", f"job types: {', '.join(names)}", {"job_types": names}),
        Line(
            "dispatcher.capacity",
            f"runs {settings.workers} jobs and {settings.delivery_concurrency} deliveries at once",
            {"workers": settings.workers, "deliveries": settings.delivery_concurrency},
        ),
    ]
    changed = changed_settings(settings)
    if changed:
        text = "settings: " + " ".join(f"{name}={value}" for name, value in changed)
        lines.append(Line("dispatcher.settings", text, {"settings": dict(changed)}))
    return lines


def database(settings: Settings) -> str:
    path = settings.sqlite_path
    if path is not None:
        return str(Path(path).absolute())
    url = URL(settings.database_url)
    return str(url.with_password("***")) if url.password else str(url)


def changed_settings(settings: Settings) -> list[tuple[str, str]]:
    """(variable, value) of each setting that is not its default; a secret shows as ***."""
    changed = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if name in _SHOWN or value == field.get_default(call_default_factory=True):
            continue
        changed.append((ENV_PREFIX + name.upper(), _shown(value)))
    return changed


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    return str(value)
