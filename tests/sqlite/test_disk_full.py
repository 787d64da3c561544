"""A full disk: submissions and readiness answer 503, nothing accepted is lost, and both
recover by themselves once there is room. A real `dispatcher serve` on a small tmpfs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY as ADMIN
from tests.conftest import wait_for

CHUNK = b"\0" * 65536


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB filesystem of its own (tmpfs), unmounted after the test."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no room left; the file, to delete later."""
    filler = disk / "filler"
    # suppress() outside: closing the file flushes, which fails too.
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(CHUNK)
            out.flush()
            os.fsync(out.fileno())
    # What the buffered writer could not flush: one byte at a time, to the last block.
    with contextlib.suppress(OSError), filler.open("ab", buffering=0) as out:
        while True:
            out.write(b"\0" * 512)
    return filler


async def test_a_full_disk_is_503_and_recovers_by_itself_losing_nothing(serve, http, small_disk):
    server = await serve(DISPATCHER_DATABASE_URL=f"sqlite:///{small_disk}/d.db")
    accepted = [(await http.submit(server, type="echo", payload=n))["id"] for n in range(20)]
    filler = fill(small_disk)

    refused = None
    for n in range(5000):
        status, body = await http.call(
            server, "POST", "/v1/jobs", json={"type": "echo", "payload": {"n": n, "pad": "x" * 900}}
        )
        if status == 503:
            refused = body
            break
        assert status == 202, body
        accepted.append(body["id"])
    assert refused is not None, "the disk never filled"
    print(f"{len(accepted)} jobs accepted before the disk was full: {refused['detail']}")
    assert "disk is full" in refused["detail"]
    async with http.session.post(
        server.url + "/v1/jobs",
        json={"type": "echo", "payload": 1},
        headers={"Authorization": f"Bearer {ADMIN}"},
    ) as response:
        assert response.status == 503 and int(response.headers["Retry-After"]) > 0
    status, ready = await http.call(server, "GET", "/readyz")
    assert status == 503 and "disk is full" in ready["detail"]
    assert server.running

    filler.unlink()

    async def ready_again() -> bool:
        return (await http.call(server, "GET", "/readyz"))[0] == 200

    await wait_for(ready_again, timeout=20)
    later = await http.submit(server, type="echo", payload="after")
    accepted.append(later["id"])

    async def all_finished() -> bool:
        jobs = await http.jobs(server, accepted)
        return all(job["status"] == "succeeded" for job in jobs.values())

    await wait_for(all_finished, timeout=30)
    # Nothing half-written: exactly the accepted jobs exist, the refused ones not at all.
    status, listed = await http.call(server, "GET", "/v1/jobs?limit=500")
    assert {job["id"] for job in listed["items"]} == set(accepted)


async def test_readiness_fails_while_another_process_holds_the_write_lock(make_api, tmp_path):
    api = await make_api()
    assert (await api.call("GET", "/readyz"))[0] == 200
    other = sqlite3.connect(tmp_path / "dispatcher.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # a write lock held elsewhere, past any timeout
        status, problem = await api.call("GET", "/readyz")
        assert status == 503 and "did not take a write" in problem["detail"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert (await api.call("GET", "/readyz"))[0] == 200
    await api.submit(type="echo", payload=1)
