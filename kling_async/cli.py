"""The ``kling-async`` command (also ``python -m kling_async``).

Subcommands are dispatched by name, each with its own parser, so that a subcommand's
``--help`` is its own. Expected failures end with one line on stderr and an exit status,
never a traceback: 0 done, 1 an API, network, file or download failure, 2 a usage error,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ._args import OneLineParser
from ._cli_common import (
    PREFETCH_HELP,
    Terminated,
    add_session_arguments,
    resume_hint,
    run_main,
)
from ._cli_common import prefetch as prefetch_arg
from ._download import DEFAULT_MIN_RATE, FILE_EXTENSIONS
from ._export import (
    ExportConfig,
    ExportResult,
    ExportUsageError,
    preflight,
    run_export,
    summary_lines,
)
from ._http import check_epoch_ms, one_line, redact_text, secret_forms
from ._progress import Progress
from ._version import __version__
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    DecodeError,
    KlingError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    WalkError,
)

__all__ = ["COMMANDS", "main"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

USAGE = f"""usage: kling-async COMMAND [OPTIONS]

kling-async {__version__}: the useapi.net Kling assets API from the command line.

commands:
  export        export every work to JSONL (lossless, resumable), optionally with media
  sync          keep a browsable archive (SQLite + media) up to date; run it from cron
  watch         print each new work as a JSON line, or run a command for it (a bot)
  demo          run the export against the built-in fake API: no token, no network
  fake-server   run the built-in fake API (and CDN) for tests and demos

Run 'kling-async COMMAND --help' for a command's options.
"""

EXPORT_DESCRIPTION = """\
Export every work of a Kling account to JSONL: one work per line, exactly as the API sent it
(every field, camelCase keys, fields this library does not know included), newest first.

The export is resumable: about once a second (--commit-interval), at the end and when
stopped, OUT is fsynced and then a checkpoint beside it (OUT.checkpoint.json) records how far
it got. Killed at any moment (Ctrl-C, SIGTERM, kill -9, a lost connection), 'kling-async
export OUT --resume' truncates OUT to the last checkpoint and goes on from there, asking again
the pages fetched since: the finished file holds each work once, and no partial line.

"Each work" means every work that exists for the whole export; works created meanwhile may or
may not be in it. A deletion while the export runs shifts older works back across a page
boundary, and a page-number walk cannot see a work that moves onto a page it already read.
"""

EXPORT_EPILOG = """\
With --all-accounts, OUT is a directory: every Kling account configured in useapi
(GET /accounts) is exported, one after another, to OUT/<email>.jsonl, each with its own
checkpoint and lock (--download DIR puts its files in DIR/<email>/). --resume resumes each.
One account's failure does not stop the others; the exit status is then 1.

A wait over 2 s (a 429's Retry-After, a backoff, --sleep-request) is shown: on a terminal the
progress line counts it down, otherwise one line says it when it starts.

--resume also starts an export that has no checkpoint yet, so a script can always pass it;
a resumed export keeps the options it was started with (it refuses different ones). Without
--resume, an existing non-empty OUT is never overwritten unless --force is given.

With --download DIR, each exported work's watermark-free files are fetched through
GET /assets/download into DIR as <workId>.<ext> (a zip's entries are unpacked, each name
carrying the workId). Works still rendering, failed, or without the wanted file types are
skipped. A file is written as NAME.part and renamed when complete; a resumed export skips
works whose files are all there, and also retries the downloads that failed. The API token is
never sent to the CDN. A download that averages less than --min-rate bytes/s over a --timeout
window fails as too slow, is retried, and then counts as failed.

An export holds OUT.lock while it runs: a second export (or demo) of the same OUT stops at
once with exit 2, touching nothing.

exit status: 0 done, 1 an API, network or file failure (or a failed download), 2 a usage
error (or OUT in use by another export), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM);
after 130 and 143 what was written is committed: continue with --resume.
"""


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_since(text: str) -> int:
    """``--since``: an ISO date or datetime (naive means UTC) or epoch milliseconds.

    Returns:
        Epoch milliseconds.

    Raises:
        argparse.ArgumentTypeError: Anything else, or a number that looks like epoch seconds.
    """
    value = text.strip()
    if value.isdigit():
        try:
            return check_epoch_ms(int(value), "")  # the library's rule for since=
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if value[-1:] in ("Z", "z"):  # fromisoformat() accepts "Z" only from Python 3.11
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO date, datetime or epoch milliseconds: {text!r} "
            "(e.g. 2024-05-01, 2024-05-01T12:00:00+02:00, 1714521600000)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    # Integer arithmetic: timestamp() * 1000 can land a millisecond short.
    ms = (when - _EPOCH) // timedelta(milliseconds=1)
    if ms < 0:
        raise argparse.ArgumentTypeError(f"before 1970: {text!r}")
    return ms


def parse_file_types(text: str) -> list[str]:
    """``--file-types MP4,png``: upper-cased, known types only.

    Raises:
        argparse.ArgumentTypeError: An unknown or no file type.
    """
    types = list(dict.fromkeys(t.strip().upper() for t in text.split(",") if t.strip()))
    unknown = [t for t in types if t not in FILE_EXTENSIONS]
    if unknown or not types:
        raise argparse.ArgumentTypeError(
            f"unknown file types {','.join(unknown) or '(none)'}; use {','.join(FILE_EXTENSIONS)}"
        )
    return types


def export_parser() -> OneLineParser:
    """The parser of ``kling-async export``."""
    parser = OneLineParser(
        prog="kling-async export",
        description=EXPORT_DESCRIPTION,
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "out",
        nargs="?",
        default="-",
        metavar="OUT",
        help="JSONL file, or - for stdout (the default)",
    )
    api = parser.add_argument_group("API")
    api.add_argument(
        "--token", help="useapi.net API token (default: $USEAPI_TOKEN, which keeps it out of ps)"
    )
    api.add_argument("--email", help="Kling account email (when the useapi account has several)")
    api.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default: $KLING_BASE_URL, else useapi.net's)",
    )
    api.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds per API request; for media downloads, the longest wait for the CDN and "
        "the window over which --min-rate is measured (default: 30)",
    )
    api.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=5,
        metavar="N",
        help="retries of a 429, 5xx or network failure before giving up (default: 5)",
    )
    api.add_argument(
        "--backoff-base",
        type=_non_negative_float,
        default=1.0,
        metavar="S",
        help="base of the exponential backoff between retries, in seconds (default: 1)",
    )
    add_session_arguments(api)
    what = parser.add_argument_group("what to export")
    what.add_argument(
        "--all-accounts",
        action="store_true",
        help="every Kling account of the useapi account, each to OUT/<email>.jsonl (OUT is a "
        "directory)",
    )
    what.add_argument("--content-type", choices=("video", "image", "audio"))
    what.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="only works created after WHEN: ISO date or datetime (naive = UTC), or epoch ms",
    )
    what.add_argument(
        "--max-items",
        type=_non_negative_int,
        metavar="N",
        help="stop after N works (counted across resumes)",
    )
    what.add_argument(
        "--page-size", type=_positive_int, metavar="N", help="tasks per request (default: 40)"
    )
    what.add_argument(
        "--prefetch",
        type=prefetch_arg,
        default="auto",
        metavar="N|auto",
        help=PREFETCH_HELP,
    )
    run = parser.add_argument_group("resuming")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the export in OUT from its checkpoint (or start it)",
    )
    run.add_argument("--force", action="store_true", help="start over, replacing an existing OUT")
    run.add_argument(
        "--commit-interval",
        type=_non_negative_float,
        default=1.0,
        metavar="S",
        help="make progress durable (fsync OUT, then the checkpoint) about every S seconds, at "
        "the end and when stopped; a crash loses at most the pages since, asked again on "
        "--resume (default: 1; 0: after every page)",
    )
    media = parser.add_argument_group("media")
    media.add_argument(
        "--download", metavar="DIR", help="also fetch each work's watermark-free files into DIR"
    )
    media.add_argument(
        "--file-types",
        type=parse_file_types,
        metavar="LIST",
        help="only these types, e.g. MP4,PNG (from MP4, PNG, MP3, WAV; default: all)",
    )
    media.add_argument(
        "--min-rate",
        type=_non_negative_float,
        default=DEFAULT_MIN_RATE,
        metavar="B",
        help="bytes/s a download must average over each --timeout window, or it fails as too "
        f"slow and is retried (default: {DEFAULT_MIN_RATE:g}; 0: no minimum)",
    )
    media.add_argument(
        "--jobs",
        type=_positive_int,
        default=4,
        metavar="N",
        help="works downloaded at once (default: 4)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress (errors only)")
    return parser


def describe_error(exc: BaseException) -> str:
    """One line naming the cause of an API, network or walk failure (never the token)."""
    if isinstance(exc, AuthenticationError):
        return "unauthorized (HTTP 401): check your token (USEAPI_TOKEN or --token)"
    if isinstance(exc, PaymentRequiredError):
        return "payment required (HTTP 402): the useapi.net subscription is not active"
    if isinstance(exc, RateLimitError):
        return (
            "rate limited (HTTP 429): the Kling accounts stayed at capacity through every "
            "retry; try again later"
        )
    if isinstance(exc, PermissionDeniedError):
        return f"forbidden (HTTP 403): {exc.message}"
    if isinstance(exc, BadRequestError):
        return f"the API refused the parameters (HTTP 400): {exc.message}"
    if isinstance(exc, NotFoundError):
        return f"not found (HTTP 404) at {exc.url}: check --base-url"
    if isinstance(exc, ServerError):
        return f"server error (HTTP {exc.status}) after retries: {exc.message}"
    if isinstance(exc, APIError):
        return f"API error: {exc}"
    if isinstance(exc, TransportError):
        return f"network error: {exc}"
    if isinstance(exc, DecodeError):
        return f"unexpected response: {exc}"
    if isinstance(exc, WalkError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"{type(exc).__name__}: {exc}"


def _export(argv: Sequence[str]) -> int:
    parser = export_parser()
    args = parser.parse_args(argv)
    if args.file_types is not None and not args.download and not args.resume:
        parser.error("--file-types needs --download DIR")
    if args.out == "-" and args.resume:
        parser.error("--resume needs an output file; stdout (-) cannot be resumed")
    if args.resume and args.force:
        parser.error("--resume and --force exclude each other")
    if args.all_accounts and args.out == "-":
        parser.error("--all-accounts needs a directory for OUT")
    if args.all_accounts and args.email:
        parser.error("--all-accounts exports every account: drop --email")
    config = ExportConfig(
        out=args.out,
        token=args.token,
        base_url=args.base_url,
        email=args.email,
        content_type=args.content_type,
        page_size=args.page_size,
        since=args.since,
        max_items=args.max_items,
        prefetch=args.prefetch,
        resume=args.resume,
        force=args.force,
        download_dir=args.download,
        file_types=args.file_types,
        jobs=args.jobs,
        timeout=args.timeout,
        max_retries=args.max_retries,
        backoff_base=args.backoff_base,
        min_rate=args.min_rate,
        min_request_interval=args.sleep_request,
        max_retry_after=args.max_retry_after,
        proxy=args.proxy,
        commit_interval=args.commit_interval,
    )
    if args.all_accounts:
        from ._cli_accounts import run_export_all_command

        return run_export_all_command(config, quiet=args.quiet)
    return run_export_command(config, quiet=args.quiet)


def run_export_command(config: ExportConfig, *, quiet: bool) -> int:
    """Run an export and turn its outcome into messages and an exit status."""
    name = "kling-async export"
    progress = Progress(quiet=quiet, prefix=name)
    resumable = config.out != "-"
    token = config.token or os.environ.get("USEAPI_TOKEN") or ""
    secrets = secret_forms(token) if token else ()

    def fail(text: str) -> None:
        # The library redacts what it raises; this also covers OSError texts and the rest.
        progress.error(one_line(redact_text(text, secrets), limit=2000))

    try:
        result = run_main(run_export(config, progress))
    except KeyboardInterrupt:
        hint = "; resume with --resume" if resumable else ""
        fail(f"{name}: interrupted{hint}")
        return 130
    except Terminated:
        hint = "; resume with --resume" if resumable else ""
        fail(f"{name}: terminated{hint}")
        return 143
    except ExportUsageError as exc:
        fail(f"{name}: {exc}")
        return 2
    except RecursionError:  # msgspec on JSON nested past the recursion limit
        fail(f"{name}: unexpected response: JSON nested too deeply")
        return 1
    except (KlingError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            _silence_stdout()
            fail(f"{name}: stdout was closed")
            return 1
        fail(f"{name}: {describe_error(exc)}{resume_hint(config.out, exc)}")
        return 1
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        fail(f"{name}: unexpected error ({type(exc).__name__}: {exc}); please report it")
        return 1
    for line in summary_lines(result):
        progress.info(line)
    downloads = result.downloads
    if downloads is not None and downloads.failed:
        more = "; --resume retries them" if resumable else ""
        progress.error(f"{name}: {downloads.failed} download(s) failed{more}")
        return 1
    return 0


def _silence_stdout() -> None:
    # The reader went away: point stdout at devnull so the interpreter's final flush of
    # buffered output does not raise (and print) a second BrokenPipeError at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


def demo_parser() -> OneLineParser:
    """The parser of ``kling-async demo``."""
    parser = OneLineParser(
        prog="kling-async demo",
        description="Run the export against the built-in fake API on 127.0.0.1: no token, no "
        "network. Writes works.jsonl and a few media files into a folder.",
    )
    parser.add_argument(
        "--out",
        default="kling-demo",
        metavar="DIR",
        help="folder for the demo's files (default: ./kling-demo)",
    )
    parser.add_argument(
        "--tasks",
        type=_positive_int,
        default=3000,
        metavar="N",
        help="tasks in the fake library (default: 3000)",
    )
    parser.add_argument(
        "--downloads",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="fetch the media of the first N works (default: 10)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace DIR/works.jsonl even if the demo did not write it",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress")
    return parser


def _demo(argv: Sequence[str]) -> int:
    args = demo_parser().parse_args(argv)
    return run_demo(
        Path(args.out),
        tasks=args.tasks,
        downloads=args.downloads,
        quiet=args.quiet,
        force=args.force,
    )


def _demo_config(folder: Path, downloads: int, force: bool) -> ExportConfig:
    """The demo's export; ``token`` and ``base_url`` are the fake server's."""
    return ExportConfig(
        out=str(folder / "works.jsonl"),
        demo=True,  # marks its checkpoint, and replaces only a works.jsonl so marked
        force=force,
        download_dir=str(folder / "media") if downloads else None,
        download_limit=downloads,
        backoff_base=0.01,
    )


async def _demo_export(config: ExportConfig, tasks: int, progress: Progress) -> ExportResult:
    from .testing import FakeKlingServer, Faults

    # A few 429/503 answers (retried at once) so the summary shows retries at work.
    faults = Faults(rate=0.03, kinds=("429", "503"), retry_after="0")
    async with FakeKlingServer(
        tasks, token="demo-token", seed=2028, file_size=2048, faults=faults
    ) as server:
        print(
            f"kling-async demo: fake Kling API at {server.base_url} ({tasks:,} tasks), "
            f"fake CDN at {server.cdn_url}; no token or network needed",
            flush=True,
        )
        config = replace(config, token=server.token, base_url=server.base_url)
        return await run_export(config, progress)


def run_demo(
    folder: Path,
    *,
    tasks: int = 3000,
    downloads: int = 10,
    quiet: bool = False,
    force: bool = False,
) -> int:
    """``kling-async demo``: export the fake library into ``folder``; returns the exit status."""
    name = "kling-async demo"
    progress = Progress(quiet=quiet, prefix=name)
    config = _demo_config(folder, downloads, force)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        preflight(config)  # refused (a real export, one running) before the server starts
        result = run_main(_demo_export(config, tasks, progress))
    except KeyboardInterrupt:
        progress.error(f"{name}: interrupted")
        return 130
    except Terminated:
        progress.error(f"{name}: terminated")
        return 143
    except ExportUsageError as exc:
        progress.error(f"{name}: {exc}")
        return 2
    except (KlingError, OSError) as exc:
        progress.error(f"{name}: {describe_error(exc)}")
        return 1
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        progress.error(f"{name}: unexpected error ({type(exc).__name__}: {exc}); please report it")
        return 1
    progress.clear()
    for line in summary_lines(result):
        print(line)
    print(f"\nJSONL:  {result.out}  ({result.works:,} works, one JSON object per line)")
    dl = result.downloads
    if dl is not None:
        print(
            f"media:  {result.download_dir}{os.sep}  ({dl.files:,} files written from the "
            f"first {downloads} works; {dl.present} works already there)"
        )
    print(
        "\nNext, with your own token:  USEAPI_TOKEN=... kling-async export works.jsonl "
        "--download media\n(Ctrl-C at any time, then add --resume to continue.)"
    )
    failed = dl.failed if dl is not None else 0
    return 1 if failed else 0


def _sync(argv: Sequence[str]) -> int:
    from ._cli_sync import main as sync_main

    return sync_main(argv)


def _watch(argv: Sequence[str]) -> int:
    from ._cli_watch import main as watch_main

    return watch_main(argv)


def _fake_server(argv: Sequence[str]) -> int:
    from .testing._cli import main as fake_server_main

    return fake_server_main(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "demo": _demo,
    "export": _export,
    "fake-server": _fake_server,
    "sync": _sync,
    "watch": _watch,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kling-async``; returns the exit status (0 done, 1 failure, 2 usage error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE, end="")
        return 0
    if args[:1] == ["--version"]:
        print(f"kling-async {__version__}")
        return 0
    command = COMMANDS.get(args[0]) if args else None
    if command is None:
        what = f"unknown command {args[0]!r}" if args else "no command given"
        print(
            f"kling-async: {what}; use one of {', '.join(COMMANDS)} (see kling-async --help)",
            file=sys.stderr,
        )
        return 2
    try:
        return command(args[1:])
    except SystemExit as exc:  # argparse's usage errors and --help
        return exc.code if isinstance(exc.code, int) else 2
