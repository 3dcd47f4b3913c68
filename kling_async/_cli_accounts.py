"""``kling-async export OUT --all-accounts``: messages and exit status around
:func:`kling_async._export.run_export_all`."""

from __future__ import annotations

from ._cli_common import Terminated, resume_hint, run_main
from ._export import (
    AccountExport,
    AllAccountsResult,
    ExportConfig,
    ExportUsageError,
    run_export_all,
    summary_lines,
)
from ._progress import Progress
from .cli import describe_error
from .errors import KlingError

__all__ = ["run_export_all_command", "total_lines"]

NAME = "kling-async export"


def _report(progress: Progress, account: AccountExport) -> None:
    """One account's summary, or the one line saying why it failed."""
    if account.error is not None:
        hint = resume_hint(account.out, account.error)
        progress.error(
            f"{NAME}: account {account.email} failed: {describe_error(account.error)}{hint}"
        )
        return
    assert account.result is not None
    for line in summary_lines(account.result):
        progress.info(f"  {line}")
    downloads = account.result.downloads
    if downloads is not None and downloads.failed:
        progress.error(
            f"{NAME}: account {account.email}: {downloads.failed} download(s) failed; "
            "--resume retries them"
        )


def total_lines(outcome: AllAccountsResult) -> list[str]:
    """The summary over every account."""
    done = [a for a in outcome.accounts if a.result is not None]
    works = sum(a.result.works_run for a in done if a.result is not None)
    total = sum(a.result.works for a in done if a.result is not None)
    failed = outcome.failed
    line = (
        f"all accounts: {len(outcome.accounts)} exported into {outcome.directory}, "
        f"{works:,} works this run ({total:,} in the files)"
    )
    if failed:
        line += f"; {len(failed)} failed: {', '.join(a.email for a in failed)}"
    return [line]


def run_export_all_command(config: ExportConfig, *, quiet: bool) -> int:
    """Run the export of every account; 0 when all succeeded, 1 when any failed."""
    progress = Progress(quiet=quiet, prefix=NAME)
    try:
        outcome = run_main(
            run_export_all(config, progress, on_account=lambda a: _report(progress, a))
        )
    except KeyboardInterrupt:
        progress.error(f"{NAME}: interrupted; resume with --resume")
        return 130
    except Terminated:
        progress.error(f"{NAME}: terminated; resume with --resume")
        return 143
    except ExportUsageError as exc:
        progress.error(f"{NAME}: {exc}")
        return 2
    except (KlingError, OSError) as exc:
        progress.error(f"{NAME}: listing the accounts failed: {describe_error(exc)}")
        return 1
    if not outcome.accounts:
        progress.error(f"{NAME}: no Kling account is configured in useapi (GET /accounts)")
        return 1
    for line in total_lines(outcome):
        progress.info(line)
    return 1 if outcome.failed else 0
