"""Child processes on loopback: start, wait until they answer, measure, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

# Where `python -m benchmarks` runs from: children import this package from there.
ROOT = Path(__file__).resolve().parents[1]
DISPATCHER = str(Path(sys.executable).with_name("dispatcher"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """One process of the benchmark's own, stopped (and reaped) however the run ends."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None
    ):
        self.argv = list(argv)
        output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        self.started = time.time()
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env={**os.environ, **(env or {})},
            stdout=output, stderr=output, start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def kill(self) -> None:
        """kill -9, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


async def answering(url: str, timeout: float = 60, ok: int = 500) -> float:
    """Seconds until `url` answers with a status below `ok`."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < timeout:
            try:
                async with session.get(url) as response:
                    if response.status < ok:
                        return time.monotonic() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")
