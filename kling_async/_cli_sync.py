"""``kling-async sync DIR``: options, messages and exit status around
:func:`kling_async._sync.run_sync` (and :func:`~kling_async._sync.run_sync_all`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sqlite3
from collections.abc import Sequence

from ._args import OneLineParser
from ._cli_common import PREFETCH_HELP, add_session_arguments
from ._cli_common import prefetch as prefetch_arg
from ._download import DEFAULT_MIN_RATE
from ._http import one_line, redact_text, secret_forms
from ._progress import Progress, format_bytes
from ._sync import (
    DEFAULT_PENDING_MAX_AGE,
    AccountSync,
    AllAccountsSync,
    SyncConfig,
    SyncResult,
    SyncUsageError,
    run_sync,
    run_sync_all,
)
from ._template import DEFAULT_TEMPLATE
from .errors import KlingError

__all__ = ["main", "parse_age", "summary_lines", "sync_parser"]

NAME = "kling-async sync"

DESCRIPTION = """\
Keep a browsable archive of a Kling account in DIR, up to date: run it from cron.

DIR/archive.sqlite (SQLite, WAL) is the archive: every work once, exactly as the API last
sent it (table works), each media file fetched (media) and each run (runs). Media files are
the watermark-free ones (GET /assets/download), at --path-template, with NAME.json (the raw
work) and NAME.txt (prompt, model, created) beside them.

The first run archives the whole library (killed, the next run resumes it). Later runs stop
at the first page that reaches what the last complete run had seen, so an archive already up
to date costs one or two requests; they also read again the works that were not finished
(status other than 99) at the last run, down to the oldest one younger than
--pending-max-age, and fetch their media once they succeed.
"""

EPILOG = f"""\
--path-template fields: work_id, task_id, created (UTC; strftime format after a colon),
content_type, type, status, email, prompt. Default: {DEFAULT_TEMPLATE}
(plus the extension). Values are sanitised (no folders, no '..', no control characters;
an absent one is 'none') and the prompt is cut so every name stays within 255 bytes. A
template must hold {{work_id}} and stay inside DIR.

A work whose media are recorded is never fetched again, even if its files were deleted or
moved; --refetch-missing fetches those again.

exit status: 0 done, 1 an API, network, file or download failure (the next run retries
what is missing), 2 a usage error (or another sync is updating DIR), 130 interrupted.
"""

_AGE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``--pending-max-age``: seconds, or a number with a unit (``s``, ``m``, ``h``, ``d``,
    ``w``), as seconds.

    Raises:
        argparse.ArgumentTypeError: Anything else.
    """
    match = _AGE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not an age: {text!r}; use seconds or a number with s, m, h, d or w (7d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def sync_parser() -> OneLineParser:
    """The parser of ``kling-async sync``."""
    from .cli import (
        _non_negative_float,
        _non_negative_int,
        _positive_float,
        _positive_int,
        parse_file_types,
    )

    parser = OneLineParser(
        prog=NAME,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", metavar="DIR", help="the archive's directory")
    api = parser.add_argument_group("API")
    api.add_argument(
        "--token", help="useapi.net API token (default: $USEAPI_TOKEN, which keeps it out of ps)"
    )
    api.add_argument("--email", help="Kling account email (when the useapi account has several)")
    api.add_argument(
        "--base-url", metavar="URL", help="API base URL (default: $KLING_BASE_URL, else useapi's)"
    )
    api.add_argument(
        "--timeout", type=_positive_float, default=30.0, metavar="S", help="(default: 30)"
    )
    api.add_argument(
        "--max-retries", type=_non_negative_int, default=5, metavar="N", help="(default: 5)"
    )
    api.add_argument(
        "--backoff-base", type=_non_negative_float, default=1.0, metavar="S", help="(default: 1)"
    )
    add_session_arguments(api)
    what = parser.add_argument_group("what to archive")
    what.add_argument(
        "--all-accounts",
        action="store_true",
        help="every Kling account of the useapi account, into the one archive",
    )
    what.add_argument("--content-type", choices=("video", "image", "audio"))
    what.add_argument(
        "--page-size", type=_positive_int, default=40, metavar="N", help="(default: 40)"
    )
    what.add_argument(
        "--prefetch",
        type=prefetch_arg,
        default="auto",
        metavar="N|auto",
        help=PREFETCH_HELP,
    )
    what.add_argument(
        "--pending-max-age",
        type=parse_age,
        default=DEFAULT_PENDING_MAX_AGE,
        metavar="AGE",
        help="read unfinished works again while they are younger than AGE than the newest "
        "work (seconds, or 12h, 7d...; default: 7d)",
    )
    media = parser.add_argument_group("media")
    media.add_argument(
        "--file-types",
        type=parse_file_types,
        metavar="LIST",
        help="only these types, e.g. MP4,PNG (default: all)",
    )
    media.add_argument(
        "--jobs", type=_positive_int, default=4, metavar="N", help="works fetched at once"
    )
    media.add_argument("--no-media", action="store_true", help="archive the works only")
    media.add_argument("--no-sidecars", action="store_true", help="no NAME.json / NAME.txt")
    media.add_argument(
        "--path-template", default=DEFAULT_TEMPLATE, metavar="T", help="where media go in DIR"
    )
    media.add_argument(
        "--refetch-missing",
        action="store_true",
        help="fetch again the recorded media whose files are gone from DIR",
    )
    media.add_argument(
        "--min-rate", type=_non_negative_float, default=DEFAULT_MIN_RATE, metavar="B"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be fetched; write nothing"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress (errors only)")
    return parser


def summary_lines(result: SyncResult) -> list[str]:
    """The end-of-run summary, one fact per line."""
    who = f" ({result.email})" if result.email else ""
    lines: list[str] = []
    if result.dry_run:
        lines.append(
            f"dry run{who}: {result.new_works:,} new works, {result.updated_works:,} updated; "
            f"would fetch the media of {result.would_fetch:,} works ({result.skipped:,} "
            f"without files); {result.requests:,} requests; nothing written"
        )
        lines += [f"  {name}" for name in result.names]
        if result.would_fetch > len(result.names):
            lines.append(f"  ... and {result.would_fetch - len(result.names):,} more")
        return lines
    lines.append(
        f"synced{who}: {result.new_works:,} new works, {result.updated_works:,} updated, "
        f"{result.media_files:,} media files fetched ({format_bytes(result.media_bytes)}), "
        f"{result.skipped:,} skipped, {result.failed:,} failed; {result.requests:,} requests"
        + (" (an interrupted walk resumed)" if result.resumed else "")
    )
    lines.append(
        f"  archive {result.directory}: {result.total_works:,} works, "
        f"{result.total_files:,} media files ({format_bytes(result.total_bytes)})"
    )
    return lines


def _config(args: argparse.Namespace) -> SyncConfig:
    return SyncConfig(
        directory=args.directory,
        token=args.token,
        base_url=args.base_url,
        email=args.email,
        content_type=args.content_type,
        page_size=args.page_size,
        prefetch=args.prefetch,
        file_types=args.file_types,
        jobs=args.jobs,
        media=not args.no_media,
        sidecars=not args.no_sidecars,
        path_template=args.path_template,
        refetch_missing=args.refetch_missing,
        pending_max_age=args.pending_max_age,
        dry_run=args.dry_run,
        timeout=args.timeout,
        max_retries=args.max_retries,
        backoff_base=args.backoff_base,
        min_rate=args.min_rate,
        min_request_interval=args.sleep_request,
        max_retry_after=args.max_retry_after,
        proxy=args.proxy,
    )


def _total_lines(outcome: AllAccountsSync) -> list[str]:
    done = [a.result for a in outcome.accounts if a.result is not None]
    failed = outcome.failed
    line = (
        f"all accounts: {len(outcome.accounts)} synced into {outcome.directory}: "
        f"{sum(r.new_works for r in done):,} new works, "
        f"{sum(r.updated_works for r in done):,} updated, "
        f"{sum(r.media_files for r in done):,} media files, "
        f"{sum(r.failed for r in done):,} failed downloads"
    )
    if failed:
        line += f"; {len(failed)} account(s) failed: {', '.join(a.email for a in failed)}"
    lines = [line]
    if done:
        last = done[-1]
        lines.append(
            f"  archive: {last.total_works:,} works, {last.total_files:,} media files "
            f"({format_bytes(last.total_bytes)})"
        )
    return lines


def main(argv: Sequence[str]) -> int:
    """Run ``kling-async sync``; returns the exit status."""
    from .cli import describe_error

    parser = sync_parser()
    args = parser.parse_args(argv)
    if args.all_accounts and args.email:
        parser.error("--all-accounts syncs every account: drop --email")
    if args.no_media and (args.file_types or args.refetch_missing):
        parser.error("--no-media excludes --file-types and --refetch-missing")
    config = _config(args)
    progress = Progress(quiet=args.quiet, prefix=NAME)
    token = config.token or os.environ.get("USEAPI_TOKEN") or ""
    secrets = secret_forms(token) if token else ()

    def fail(text: str) -> None:
        progress.error(one_line(redact_text(text, secrets), limit=2000))

    def report(account: AccountSync) -> None:
        if account.error is not None:
            fail(f"{NAME}: account {account.email} failed: {describe_error(account.error)}")
            return
        assert account.result is not None
        for line in summary_lines(account.result):
            print(line, flush=True)

    try:
        if args.all_accounts:
            outcome = asyncio.run(run_sync_all(config, progress, on_account=report))
        else:
            result = asyncio.run(run_sync(config, progress))
    except KeyboardInterrupt:
        fail(f"{NAME}: interrupted; the next sync goes on from where this one stopped")
        return 130
    except SyncUsageError as exc:
        fail(f"{NAME}: {exc}")
        return 2
    except RecursionError:
        fail(f"{NAME}: unexpected response: JSON nested too deeply")
        return 1
    except sqlite3.Error as exc:
        fail(f"{NAME}: archive database error: {exc}")
        return 1
    except (KlingError, OSError) as exc:
        fail(f"{NAME}: {describe_error(exc)} (what was archived stays; run sync again)")
        return 1
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        fail(f"{NAME}: unexpected error ({type(exc).__name__}: {exc}); please report it")
        return 1
    if args.all_accounts:
        if not outcome.accounts:
            fail(f"{NAME}: no Kling account is configured in useapi (GET /accounts)")
            return 1
        for line in _total_lines(outcome):
            print(line)
        return 1 if outcome.failed else 0
    for line in summary_lines(result):
        print(line)
    if result.failed:
        fail(f"{NAME}: {result.failed} download(s) failed; the next sync retries them")
        return 1
    return 0
