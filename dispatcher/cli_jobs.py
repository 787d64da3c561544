"""`dispatcher jobs`: submit, read, list, cancel and watch jobs.

A command that follows a job to its end (`jobs watch`, `jobs submit --wait`)
exits with the job's outcome: 0 when it succeeded, JOB_FAILED or
JOB_CANCELLED otherwise, with the job's error as the one-line reason.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime
from typing import Any

from dispatcher import cli_output as output
from dispatcher.cli_args import Failure, json_value
from dispatcher.cli_remote import (
    add_json,
    command,
    expect,
    expect_object,
    fetch,
    group,
    listing,
    remote,
    show_listing,
)
from dispatcher.client import FINISHED, Client

JOB_FAILED = 3
JOB_CANCELLED = 4
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def outcome(job: dict[str, Any]) -> int:
    """0 for a succeeded job; a Failure naming the error for a failed or cancelled one."""
    status = job.get("status")
    if status == "succeeded":
        return 0
    name = output.cell(job.get("id"))
    why = f": {output.job_error(job)}" if job.get("error") else ""
    if status == "cancelled":
        raise Failure(f"job {name} was cancelled{why}", JOB_CANCELLED)
    raise Failure(f"job {name} failed{why}", JOB_FAILED)


def show(job: dict[str, Any], as_json: bool) -> None:
    print(json.dumps(job, indent=2) if as_json else "\n".join(output.describe_job(job)))


@remote
async def submit(client: Client, args: argparse.Namespace) -> int:
    notify = {"email": args.email, "sms": args.sms}
    job = await client.submit(
        args.type,
        args.payload,
        callback_url=args.callback_url,
        endpoint_id=args.endpoint,
        notify={k: v for k, v in notify.items() if v} or None,
        idempotency_key=args.idempotency_key,
    )
    job_id = expect(job, "id", str)
    if not args.wait:
        print(json.dumps(job) if args.json else job_id)
        return 0
    # No limit of our own: the job's handler has one. Each request is a long-poll.
    finished = expect_object(await client.wait(job_id, timeout=math.inf), "a job")
    show(finished, args.json)
    return outcome(finished)


@remote
async def get(client: Client, args: argparse.Namespace) -> int:
    show(expect_object(await client.get(args.id), "a job"), args.json)
    return 0


@remote
async def list_jobs(client: Client, args: argparse.Namespace) -> int:
    def page(size: int, cursor: str | None) -> Any:
        return client.list_jobs(status=args.status, type=args.type, limit=size, cursor=cursor)

    items, more = await fetch(page, args.limit)
    show_listing(items, more, args, output.JOB_COLUMNS)
    return 0


@remote
async def cancel(client: Client, args: argparse.Namespace) -> int:
    job = await client.cancel(args.id)
    print(f"cancelled {output.cell(expect(job, 'id', str))}")
    return 0


@remote
async def watch(client: Client, args: argparse.Namespace) -> int:
    job: dict[str, Any] | None = None
    last = None
    async for job in client.stream(args.id):
        if job.get("status") != last:
            last = job.get("status")
            print(_change(job), flush=True)
    if job is None or job.get("status") not in FINISHED:
        raise Failure("the server ended the stream before the job finished; watch it again")
    return outcome(job)


def _change(job: dict[str, Any]) -> str:
    name, status = output.cell(job.get("id")), output.cell(job.get("status"))
    line = f"{datetime.now():%H:%M:%S}  {name}  {status}"
    if job.get("error"):
        line += f"  {output.job_error(job)}"
    return line


def add_commands(commands: Any) -> None:
    jobs = group(commands, "jobs", "submit, read, list, cancel and watch jobs")

    new = command(jobs, "submit", "submit a job and print its id (or wait for it to finish)")
    new.add_argument("type", metavar="TYPE", help="the job type, e.g. echo")
    new.add_argument(
        "--payload",
        type=json_value,
        default={},
        metavar="JSON",
        help="the payload: JSON text, @FILE or @- for standard input (default {})",
    )
    webhook = new.add_mutually_exclusive_group()
    webhook.add_argument("--callback-url", metavar="URL", help="where to POST the signed webhook")
    webhook.add_argument(
        "--endpoint", metavar="ID", help="send the webhook to this endpoint (ep_…) instead"
    )
    new.add_argument("--email", help="also email the result to this address")
    new.add_argument("--sms", metavar="NUMBER", help="also text the status to this E.164 number")
    new.add_argument(
        "--idempotency-key", metavar="KEY", help="the same key again returns the first job"
    )
    new.add_argument(
        "--wait",
        action="store_true",
        help="wait until the job finishes, show it, and exit with its outcome",
    )
    add_json(new, "print the job as the API's JSON instead")
    new.set_defaults(func=submit)

    one = command(jobs, "get", "show a job: status, error, result and deliveries")
    one.add_argument("id", metavar="ID", help="the job's id (job_…)")
    add_json(one)
    one.set_defaults(func=get)

    found = listing(jobs, "list", "list jobs, newest first", "jobs")
    found.add_argument("--status", choices=STATUSES, help="only jobs in this status")
    found.add_argument("--type", help="only jobs of this type")
    found.set_defaults(func=list_jobs)

    stop = command(jobs, "cancel", "cancel a queued job (it is delivered as job.cancelled)")
    stop.add_argument("id", metavar="ID", help="the job's id (job_…)")
    stop.set_defaults(func=cancel)

    follow = command(jobs, "watch", "print each change of a job's status until it finishes")
    follow.add_argument("id", metavar="ID", help="the job's id (job_…)")
    follow.set_defaults(func=watch)
