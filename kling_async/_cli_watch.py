"""``kling-async watch``: a bot without code. Argument wiring, the ``--exec`` handler,
messages and exit statuses around :func:`kling_async._watch_bot.run_watch_bot`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ._cli_common import add_session_arguments
from ._http import DEFAULT_BASE_URL
from ._progress import Progress
from ._session import KlingSession
from ._watch_bot import BotUsageError, Handler, run_watch_bot
from .cli import (
    _non_negative_int,
    _positive_float,
    _positive_int,
    _silence_stdout,
    describe_error,
    parse_since,
)
from .errors import KlingError
from .models import Work

__all__ = ["main", "watch_parser"]

NAME = "kling-async watch"

DESCRIPTION = """\
Watch a Kling account for new works and print each one as a JSON line on stdout, exactly as
the API sent it, once. Within a poll, works come oldest first (the order they were made). By
default only succeeded works are printed, each once it has succeeded; --all-works prints every
new work at first sight.

FILE holds what has been handled. It is replaced atomically (temp file, fsync, rename) after
each work, so a watch killed at any moment (even kill -9) loses no work, and repeats at most
the one whose command was running. --since applies only when FILE does not exist yet; without
it, the first run starts from now and prints nothing.
"""

EPILOG = """\
With --exec CMD, CMD runs (through /bin/sh) once per work, with the work's JSON line on its
stdin and KLING_WORK_ID in its environment; its stdout and stderr go to stderr, and the line is
printed on stdout once CMD succeeds. CMD SHOULD BE IDEMPOTENT: a watch killed while CMD runs
runs it again for that work. A CMD that fails (non-zero exit) stops that poll there: the next
poll starts again from that work, and nothing after it is skipped or marked done.

--once polls once and exits (for cron): exit status 0 when every new work was handled, 1 when
CMD failed or the API failed (nothing is lost: the next run starts from there).

exit status: 0 done (--once) or stopped; 1 an API, network or file failure (or CMD failed with
--once); 2 a usage error (also an unreadable or busy FILE); 130 interrupted.
"""


def watch_parser() -> argparse.ArgumentParser:
    """The parser of ``kling-async watch``."""
    parser = argparse.ArgumentParser(
        prog=NAME,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state", required=True, metavar="FILE", help="the watch's state file (created)"
    )
    parser.add_argument(
        "--interval",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds between polls (default: 30)",
    )
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="on the first run (no FILE yet), also the works created after WHEN: ISO date or "
        "datetime (naive = UTC), or epoch ms",
    )
    parser.add_argument("--once", action="store_true", help="poll once and exit (for cron)")
    parser.add_argument(
        "--exec", dest="command", metavar="CMD", help="run CMD for each work (see below)"
    )
    parser.add_argument(
        "--all-works",
        action="store_true",
        help="every new work at first sight, rendering or failed too (default: succeeded only)",
    )
    api = parser.add_argument_group("API")
    api.add_argument(
        "--token", help="useapi.net API token (default: $USEAPI_TOKEN, which keeps it out of ps)"
    )
    api.add_argument("--email", help="Kling account email (when the useapi account has several)")
    api.add_argument("--base-url", metavar="URL", help="API base URL (default: useapi.net's)")
    api.add_argument("--content-type", choices=("video", "image", "audio"))
    api.add_argument(
        "--page-size", type=_positive_int, default=40, metavar="N", help="tasks per request"
    )
    api.add_argument(
        "--timeout", type=_positive_float, default=30.0, metavar="S", help="seconds per request"
    )
    api.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=5,
        metavar="N",
        help="retries of a 429, 5xx or network failure within a poll (default: 5)",
    )
    add_session_arguments(api)
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only on stderr")
    return parser


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured in tests)
        return None


def _print_line(line: bytes) -> None:
    out = sys.stdout
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(line)
    else:
        out.write(line.decode("utf-8", "replace"))
    out.flush()


async def _print(work: Work, line: bytes) -> bool:
    _print_line(line)
    return True


def _exec_handler(command: str, progress: Progress) -> Handler:
    async def run(work: Work, line: bytes) -> bool:
        env = {**os.environ, "KLING_WORK_ID": str(work.work_id)}
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.PIPE, stdout=_stderr_fd(), env=env
        )
        try:
            await proc.communicate(line)
        except BaseException:
            # Interrupted (Ctrl-C, cancellation): do not leave CMD running, then re-raise.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        if proc.returncode != 0:
            progress.error(f"{NAME}: CMD exited with {proc.returncode} for work {work.work_id}")
            return False
        _print_line(line)
        return True

    return run


async def _run(args: argparse.Namespace, progress: Progress) -> int:
    token = args.token or os.environ.get("USEAPI_TOKEN") or None
    if not token:
        progress.error(f"{NAME}: no API token: pass --token or set USEAPI_TOKEN")
        return 2
    try:
        kling = KlingSession(
            token,
            email=args.email,
            base_url=args.base_url or DEFAULT_BASE_URL,
            timeout=args.timeout,
            max_retries=args.max_retries,
            min_request_interval=args.sleep_request,
            max_retry_after=args.max_retry_after,
            proxy=args.proxy,
        )
    except ValueError as exc:
        progress.error(f"{NAME}: {exc}")
        return 2
    kling._add_announcer(progress.waiting)
    state_file = Path(args.state)
    handle = _exec_handler(args.command, progress) if args.command else _print
    async with kling:
        result = await run_watch_bot(
            kling,
            state_file,
            handle,
            interval=args.interval,
            since=args.since,
            once=args.once,
            all_works=args.all_works,
            page_size=args.page_size,
            content_type=args.content_type,
            on_notice=lambda message: progress.error(f"{NAME}: {message}"),
        )
    return 1 if result.given_back else 0


def main(argv: Sequence[str]) -> int:
    """Run ``kling-async watch``; returns the exit status."""
    args = watch_parser().parse_args(argv)
    progress = Progress(quiet=args.quiet, prefix=NAME)
    if args.since is not None and Path(args.state).exists():
        progress.info(f"{NAME}: {args.state} exists: --since is ignored (it carries on)")
    try:
        return asyncio.run(_run(args, progress))
    except KeyboardInterrupt:
        progress.error(f"{NAME}: interrupted")
        return 130
    except BotUsageError as exc:
        progress.error(f"{NAME}: {exc}")
        return 2
    except RecursionError:
        progress.error(f"{NAME}: unexpected response: JSON nested too deeply")
        return 1
    except (KlingError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):  # `kling-async watch ... | head -1`
            _silence_stdout()
            progress.error(f"{NAME}: stdout was closed")
            return 1
        progress.error(f"{NAME}: {describe_error(exc)}")
        return 1
