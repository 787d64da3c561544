"""The command line: parses, calls, prints; every failure is one line and an exit status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dispatcher import (
    __version__,
    cli_deliveries,
    cli_endpoints,
    cli_jobs,
    cli_keys,
    cli_partner,
    cli_remote,
    cli_serve,
    logs,
)
from dispatcher.cli_args import Failure
from dispatcher.cli_serve import operator_secrets
from dispatcher.client import ClientError

__all__ = ["Failure", "build_parser", "main", "operator_secrets"]

DESCRIPTION = """\
dispatcher runs jobs for other services and returns each result as a signed
webhook, an email or an SMS.

`serve` runs the service. `keys`, `jobs`, `deliveries` and `endpoints` talk to
a running server. `listen` and `verify` check the webhooks a receiver gets."""

EPILOG = f"""\
environment (keys, jobs, deliveries and endpoints):
  DISPATCHER_URL      the server (default {cli_remote.DEFAULT_URL})
  DISPATCHER_KEY      an API key; keys and every tenant's objects need an admin's
  DISPATCHER_TIMEOUT  seconds before a request gives up (default {cli_remote.DEFAULT_TIMEOUT:g})

exit status:
  0  done
  1  failed: the one line on stderr says why
  2  a bad argument, variable or setting
  {cli_jobs.JOB_FAILED}  the job failed (jobs watch, jobs submit --wait)
  {cli_jobs.JOB_CANCELLED}  the job was cancelled (jobs watch, jobs submit --wait)

'dispatcher COMMAND --help' shows a command's options."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, like every other failure; the usage is one --help away.
        self.exit(2, f"{self.prog}: {_one_line(message)} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dispatcher",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    cli_remote.add_timeout(parser)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )
    cli_serve.add_command(commands)
    cli_keys.add_commands(commands)
    cli_jobs.add_commands(commands)
    cli_deliveries.add_commands(commands)
    cli_endpoints.add_commands(commands)
    cli_partner.add_commands(commands)
    return parser


def _one_line(text: str) -> str:
    # A server's error text ends up on a terminal: no escapes, no line breaks.
    printable = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(printable.split())


def _fail(reason: str) -> None:
    # `serve` fails after logging is set up, perhaps quoting a setting: mask what it masks.
    reason = logs.mask_secrets(_one_line(reason))
    logs.say("dispatcher.failed", f"dispatcher: {reason}", error=True, reason=reason)


def _quiet_stdout() -> None:
    # The reader went away (`dispatcher deliveries list | head -1`): the interpreter's
    # final flush would otherwise print a traceback of its own.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except Failure as exc:
        _fail(str(exc))
        return exc.code
    except ClientError as exc:
        _fail(cli_remote.explain(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141  # as a shell reports a process ended by SIGPIPE
    except Exception as exc:
        # The boundary: a user gets one line, never a traceback.
        _fail(f"unexpected error: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
