"""Every key and secret the suite is handed, and a check that no log line ever carries one.

Each API answer the tests read passes through `remember`. For the whole session,
records are also written by the production handler (`logs.build_handler`: its
formatting and redaction) to a buffer, at INFO with aiosqlite held at WARNING
as `logs.configure` does; at the end, and for each `dispatcher serve` process
after its test, no remembered secret may appear in what was written.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import logs

PREFIXES = ("dk_", "whsec_", "whsk_", "whpk_")
NAMED = {"key", "secret", "signing_secret", "token"}
ISSUED: set[str] = set()


def remember(body: Any) -> None:
    """Note each secret in an API answer: a key, a signing secret, a token."""
    if isinstance(body, dict):
        for name, value in body.items():
            if name in NAMED and isinstance(value, str) and len(value) >= 8:
                ISSUED.add(value)
            remember(value)
    elif isinstance(body, list):
        for value in body:
            remember(value)
    elif isinstance(body, str) and body.startswith(PREFIXES) and len(body) > 12:
        ISSUED.add(body)


def leaked_in(text: str) -> list[str]:
    return sorted(secret for secret in ISSUED if secret in text)


def assert_no_secret_in(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            leaked = leaked_in(path.read_text(errors="replace"))
            assert not leaked, f"{path.name} logged {len(leaked)} secret(s): {leaked[:3]}"


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line(operator_secret: str) -> Iterator[None]:
    ISSUED.add(operator_secret)
    buffer = io.StringIO()
    handler = logs.build_handler(
        "text", buffer, logs.Redactor([operator_secret]), limit_repeats=False
    )
    root, quiet = logging.getLogger(), logging.getLogger("aiosqlite")
    levels = root.level, quiet.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    quiet.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        quiet.setLevel(levels[1])
    # A run of subprocess tests alone writes nothing here; their stderr is checked instead.
    leaked = leaked_in(buffer.getvalue())
    assert not leaked, f"the logs carried {len(leaked)} secret(s), e.g. {leaked[:3]}"
