"""The handler registry, the `@handler` decorator and the built-in job types."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.errors import StartupError

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
        return await _in_daemon_thread(self.fn, payload, name=f"handler:{self.name}")


async def _in_daemon_thread(fn: Callable[[Any], Any], payload: Any, *, name: str) -> Any:
    """Call `fn(payload)` on a new daemon thread and await its result.

    Not `asyncio.to_thread`: the default executor's threads are joined at exit,
    so a handler still sleeping after shutdown released its job would keep the
    process alive. A daemon thread is abandoned instead (its job is already back
    in the queue), and its late result has nowhere to go.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled: timed out, or the job was released
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        result, error = None, None
        try:
            result = context.run(fn, payload)
        except StopIteration as exc:
            # A future refuses it; a coroutine turns it into this RuntimeError too.
            error = RuntimeError("handler raised StopIteration")
            error.__cause__ = exc
        except BaseException as exc:  # raised in the awaiting task, as to_thread does
            error = exc
        # The loop is gone when the thread outlives the process's shutdown.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future


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


def load_registry(modules: Iterable[str], search: Path | None = None) -> Registry:
    """Import the operator's handler modules, then snapshot the registry.

    `search` (the working directory of `dispatcher serve`) comes first on the
    import path, as it does for `python -m`: an installed console script does
    not have it there, and `myjobs.py` beside the user would not be found.
    """
    if search is not None and str(search) not in sys.path:
        sys.path.insert(0, str(search))
    for module in modules:
        _import(module, search)
    return DEFAULT_REGISTRY.copy()


def _import(module: str, search: Path | None) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module + ".").startswith(exc.name + "."):
            where = f"in {search} or " if search is not None else ""
            raise StartupError(
                f"DISPATCHER_HANDLERS: no module {module!r} {where}on the Python path; start "
                f"dispatcher in the folder that holds {module.split('.')[0]}, or install it "
                "with pip"
            ) from exc
        raise StartupError(
            f"DISPATCHER_HANDLERS: importing {module!r} failed: {exc}; install what it needs"
        ) from exc
    except Exception as exc:
        raise StartupError(
            f"DISPATCHER_HANDLERS: importing {module!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


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
