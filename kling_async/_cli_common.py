"""What the API commands share (``export``, ``watch``, ``demo``): the pace, Retry-After cap and
proxy options, and running a coroutine so that Ctrl-C and SIGTERM end it cleanly."""

from __future__ import annotations

import argparse
import asyncio
import errno
import math
import signal
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from ._export import ExportUsageError, checkpoint_path, load_state
from ._retry import DEFAULT_MAX_RETRY_AFTER
from .errors import RateLimitError, ServerError, TransportError

__all__ = [
    "PREFETCH_HELP",
    "Terminated",
    "add_session_arguments",
    "prefetch",
    "resume_hint",
    "run_main",
    "seconds",
]

#: Out of disk space or quota: free some, and a resume goes on.
_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})

T = TypeVar("T")


class Terminated(Exception):
    """The process got SIGTERM; the coroutine was cancelled and its cleanup ran (exit 143)."""


async def _until_sigterm(main: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    got: list[int] = []

    def on_sigterm() -> None:
        got.append(signal.SIGTERM)
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        installed = False
    try:
        return await main
    except asyncio.CancelledError:
        if got:  # our own cancellation, for SIGTERM: finally blocks (commits) have run
            raise Terminated() from None
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)


def run_main(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, where SIGTERM, like Ctrl-C, cancels ``main`` so that its cleanup
    (an export's last commit) runs before the process ends.

    Raises:
        KeyboardInterrupt: Ctrl-C (exit 130).
        Terminated: SIGTERM (exit 143).
    """
    return asyncio.run(_until_sigterm(main))


PREFETCH_HELP = (
    "pages requested ahead: an int, or auto (the default): none while the API answers within "
    "10 ms, up to 8 otherwise, halved on a 429 or 5xx; 0 asks only what is needed"
)


def prefetch(text: str) -> int | Literal["auto"]:
    """An argparse type: ``auto`` or an int >= 0."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not auto or an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be auto or >= 0, got {value}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def add_session_arguments(group: argparse._ArgumentGroup) -> None:
    """``--sleep-request``, ``--max-retry-after`` and ``--proxy``, into an option group."""
    group.add_argument(
        "--sleep-request",
        type=seconds,
        default=0.0,
        metavar="S",
        help="send API requests at least S seconds apart (all of them: pages, prefetched "
        "pages, download links; not CDN files). Default: 0",
    )
    group.add_argument(
        "--max-retry-after",
        type=seconds,
        default=DEFAULT_MAX_RETRY_AFTER,
        metavar="S",
        help="longest Retry-After honoured; a longer one is waited out for S seconds, then the "
        f"request is retried (default: {DEFAULT_MAX_RETRY_AFTER:g})",
    )
    group.add_argument(
        "--proxy",
        metavar="URL",
        help="http(s) proxy for API and CDN requests (default: $HTTPS_PROXY/$HTTP_PROXY, "
        "honouring $NO_PROXY)",
    )


def _may_pass(exc: BaseException) -> bool:
    """A failure that may not happen again: network, 429, 5xx, a full disk."""
    if isinstance(exc, (TransportError, RateLimitError, ServerError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def resume_hint(out: str, exc: BaseException) -> str:
    """`` (progress saved: continue with --resume)`` when a resume would get further: the
    export's checkpoint holds committed works and the failure may pass; else ``""``."""
    if out == "-" or not _may_pass(exc):
        return ""
    try:
        state = load_state(checkpoint_path(out))
    except ExportUsageError:
        return ""
    if state is None or state.finished or state.out_bytes == 0:
        return ""
    return " (progress saved: continue with --resume)"
