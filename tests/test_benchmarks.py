"""The benchmark command runs as documented, tiny: every phase ends, every figure prints.

Speed itself is never asserted here (the machine is shared and noisy); the
figures are read in BENCHMARKS.md. What is asserted is that the command works
and that it fails loudly when a job or webhook goes missing.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.report import LINES
from tests.support.databases import REQUIRED
from tests.support.process import REPO_ROOT


@pytest.mark.timeout(240)
def test_the_benchmark_runs_every_phase_and_prints_every_figure(tmp_path):
    saved = tmp_path / "figures.json"
    command = [sys.executable, "-m", "benchmarks", "--jobs", "60", "--all", "--pending", "2000",
               "--restart-pending", "500", "--json", str(saved)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stdout + done.stderr
    # Celery and PostgreSQL are optional: the run says when it skips them.
    skipped = {"celery"} if "celery: not installed" in done.stdout else set()
    if "postgres: no server" in done.stdout and not REQUIRED:
        skipped.add("postgres")
    for section, _name, label in LINES:
        if section not in skipped:
            assert label in done.stdout, f"{label!r} missing:\n{done.stdout}"
    assert "end to end ÷ bare" in done.stdout
    assert ("Celery (prefork, 2)" in done.stdout) or ("celery: not installed" in done.stdout)
    assert saved.read_text().startswith("{")
    print(done.stdout)


def test_an_unknown_phase_is_refused_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nosuch"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown phases: nosuch" in done.stderr
