"""Options every API command shares (``export``, ``watch``): pace, Retry-After cap, proxy."""

from __future__ import annotations

import argparse
import math
from typing import Literal

from ._retry import DEFAULT_MAX_RETRY_AFTER

__all__ = ["PREFETCH_HELP", "add_session_arguments", "prefetch", "seconds"]

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
