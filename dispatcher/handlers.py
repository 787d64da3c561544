"""The handler registry, the `@handler` decorator and the built-in job types."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT = 600.0


class Retry(Exception):
    """Run this job again after `after` seconds; counted against the handler's retries."""

    def __init__(self, after: float = 0) -> None:
        super().__init__(f"retry after {after}s")
        self.after = max(0.0, float(after))


@dataclass(frozen=True, slots=True)
class Handler:
    name: str
    fn: Callable[[Any], Any]
    timeout: float
    retries: int

    async def run(self, payload: Any) -> Any:
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(payload)
        # A plain def may block: keep it off the event loop. On timeout the
        # thread cannot be killed; the job fails and the thread's result is dropped.
        return await asyncio.to_thread(self.fn, payload)


class Registry:
    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self._handlers = {h.name: h for h in handlers}

    def add(self, handler: Handler) -> None:
        self._handlers[handler.name] = handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def copy(self) -> Registry:
        return Registry(self._handlers.values())


# Where `@handler` registers: user modules import `dispatcher.handler` at
# import time, before any app exists. The app takes a copy at start.
DEFAULT_REGISTRY = Registry()


def handler(
    name: str, *, timeout: float = DEFAULT_TIMEOUT, retries: int = 0
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register a function as the handler for jobs of type `name`."""

    def register(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        DEFAULT_REGISTRY.add(Handler(name, fn, float(timeout), int(retries)))
        return fn

    return register


def load_registry(modules: Iterable[str]) -> Registry:
    """Import the operator's handler modules, then snapshot the registry."""
    for module in modules:
        importlib.import_module(module)
    return DEFAULT_REGISTRY.copy()


@handler("echo")
async def echo(payload: Any) -> Any:
    return payload


@handler("sleep")
async def sleep(payload: Any) -> Any:
    if not isinstance(payload, dict) or not isinstance(payload.get("seconds", 0), int | float):
        raise ValueError('payload must be {"seconds": number, "result": any}')
    await asyncio.sleep(float(payload.get("seconds", 0)))
    return payload.get("result")


class JobFailed(Exception):
    """The `fail` job type's error."""


@handler("fail")
async def fail(payload: Any) -> Any:
    message = payload.get("message") if isinstance(payload, dict) else None
    raise JobFailed(str(message) if message is not None else "failed on purpose")
