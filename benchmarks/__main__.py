"""One run, one machine: bare aiohttp, Celery + Redis and dispatcher side by side.

    python -m benchmarks [--jobs 5000] [--concurrency 64] [--all | --only NAMES] [--json FILE]

Prints every figure and the ratios between them; exits non-zero if any job,
webhook or task went missing. Only loopback is ever used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from benchmarks import bare, celery_run, figures, postgres
from benchmarks.processes import Child, answering, free_port
from benchmarks.report import Report
from benchmarks.service import Service, end_to_end
from dispatcher.webhooks import generate_secret

CORE = ("bare", "celery", "dispatcher")
MORE = ("submits", "latency", "claims", "hanging", "restart", "postgres")


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=5000, help="jobs (and POSTs) per phase")
    parser.add_argument("--concurrency", type=int, default=64, help="clients at once")
    parser.add_argument("--all", action="store_true", help="every figure, not only the three")
    parser.add_argument("--only", help=f"comma-separated phases of: {', '.join(CORE + MORE)}")
    parser.add_argument("--pending", type=int, default=1_000_000, help="backlog for claims/RSS")
    parser.add_argument("--restart-pending", type=int, default=100_000, help="backlog for restart")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(CORE + (MORE if args.all else ()))
    unknown = set(chosen) - set(CORE + MORE)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    args.phases = chosen
    return args


async def run(args: argparse.Namespace, report: Report, work: Path) -> None:
    port = free_port()
    receiver_url = f"http://127.0.0.1:{port}"
    receiver = Child(
        [sys.executable, "-m", "benchmarks.receiver", str(port)], log=work / "receiver.log"
    )
    try:
        await answering(f"{receiver_url}/wait?n=0&timeout=0")
        await _phases(args, report, work, receiver_url)
    finally:
        receiver.stop()


async def _phases(args: argparse.Namespace, report: Report, work: Path, receiver: str) -> None:
    n, c = args.jobs, args.concurrency
    if "bare" in args.phases:
        report.add(
            "bare", "signed_posts_per_s", await bare.signed_posts(receiver, generate_secret(), n, c)
        )
    if "celery" in args.phases:
        if celery_run.available():
            report.add(
                "celery",
                "deliveries_per_s",
                await celery_run.signed_posts(receiver, generate_secret(), n, work),
            )
        else:
            report.note("celery: not installed (pip install -e '.[bench]')")
    if "dispatcher" in args.phases:
        await _dispatcher(report, _folder(work, "e2e"), receiver, n, c)
    if "postgres" in args.phases:
        await _postgres(report, _folder(work, "postgres"), receiver, n, c, args.pending)
    await _more(args, report, work, receiver)


async def _more(args: argparse.Namespace, report: Report, work: Path, receiver: str) -> None:
    n, c = args.jobs, args.concurrency
    if "submits" in args.phases:
        report.update("submits", await figures.submits(_folder(work, "submits"), n, c))
    if "latency" in args.phases:
        rate = report.get("dispatcher", "jobs_per_s")
        rate = (rate or 500.0) / 2
        report.update("latency", await figures.latency(_folder(work, "latency"), receiver, rate, c))
    if "claims" in args.phases:
        found, big = await figures.claims(_folder(work, "claims"), args.pending, receiver)
        report.update("claims", found)
        report.update("backlog", await figures.backlog_rss(_folder(work, "backlog"), big, receiver))
        big.unlink()
    if "hanging" in args.phases:
        report.update("hanging", await figures.hanging(_folder(work, "hanging"), receiver, n, c))
    if "restart" in args.phases:
        report.update(
            "restart",
            await figures.restart(_folder(work, "restart"), args.restart_pending, receiver),
        )


async def _dispatcher(report: Report, folder: Path, receiver: str, n: int, c: int) -> None:
    service = Service(folder)
    try:
        await service.start()
        await service.tenant()
        run = await end_to_end(service, receiver, n, c)
    finally:
        service.stop()
    for name in ("jobs_per_s", "submits_per_s", "peak_rss_mb"):
        report.add("dispatcher", name, run[name])


async def _postgres(
    report: Report, folder: Path, receiver: str, n: int, c: int, pending: int
) -> None:
    if not await postgres.answers():
        report.note(f"postgres: no server at {postgres.SERVER} (DISPATCHER_BENCH_POSTGRES_URL)")
        return
    for count in (1, 2):
        jobs_per_s = await postgres.instances(_folder(folder, f"x{count}"), receiver, n, c, count)
        report.add("postgres", f"jobs_per_s_{count}", jobs_per_s)
    report.update("postgres", await postgres.submission_under_backlog(min(pending, 100_000)))


def _folder(work: Path, name: str) -> Path:
    folder = work / name
    folder.mkdir()
    return folder


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="dispatcher-bench-") as work:
        try:
            asyncio.run(run(args, report, Path(work)))
        except (RuntimeError, AssertionError) as failure:
            print(report.render())
            print(f"benchmark failed: {failure}", file=sys.stderr)
            return 1
    print(report.render())
    if args.json:
        args.json.write_text(json.dumps(report.figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
