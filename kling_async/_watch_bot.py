"""The engine of ``kling-async watch``: polls, one handler call per new work, and a state
file saved atomically after each work.

The state file holds a :class:`~kling_async.WatchState`. It is replaced atomically (temp file,
fsync, rename) after each work is handled and after each poll, so a process killed at any
moment (``kill -9``) loses no work and repeats at most the one whose handler was running. A
handler that fails gives its work back: the poll stops there and the next one starts again
from that work. While it runs, the bot holds ``FILE.lock``, so two bots never share a state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ._export import _line
from ._files import LockedError, atomic_write, exclusive_lock
from ._session import KlingSession
from ._watch import TRANSIENT, WatchState
from .models import Work

__all__ = ["BotUsageError", "WatchBotResult", "load_watch_state", "run_watch_bot"]

log = logging.getLogger("kling_async")

#: ``handle(work, line)``: ``line`` is the work as the API sent it, one JSON line. True when
#: the work was handled; False gives it back (the poll stops there).
Handler = Callable[[Work, bytes], Awaitable[bool]]


class BotUsageError(Exception):
    """The bot cannot start as asked (exit status 2): an unreadable or locked state file."""


@dataclass
class WatchBotResult:
    """What a bot run did."""

    handled: int = 0
    """Works handled (and saved in the state)."""
    given_back: int = 0
    """Handler failures (each work is given back to the next poll)."""
    polls: int = 0


def load_watch_state(path: Path) -> WatchState | None:
    """The state saved in ``path``, or None when the file does not exist yet.

    Raises:
        BotUsageError: It exists but is not a saved state.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BotUsageError(f"cannot read the state file {path}: {exc.strerror}") from None
    try:
        return WatchState.from_json(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BotUsageError(f"{path} is not a watch state file: {exc}") from None


async def run_watch_bot(
    kling: KlingSession,
    state_file: Path,
    handle: Handler,
    *,
    interval: float = 30.0,
    since: int | None = None,
    once: bool = False,
    all_works: bool = False,
    page_size: int = 40,
    content_type: str | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> WatchBotResult:
    """Watch for new works and hand each to ``handle``, saving the state after each one.

    Args:
        kling: The session.
        state_file: Where the :class:`WatchState` lives; ``since`` applies only while it does
            not exist yet (without ``since``, the first poll starts from now).
        handle: Called once per new work, oldest first within a poll.
        interval: Seconds between polls.
        since: Epoch ms: yield the works created after it, on the very first run.
        once: Poll once and return (for cron); transient errors are then raised.
        all_works: Every new work at first sight, rendering or not (else succeeded works).
        page_size: History entries per request.
        content_type: ``"video"``, ``"image"``, ``"audio"`` or None.
        on_notice: Called with one line for a transient failure or a given-back work.

    Raises:
        BotUsageError: The state file is unreadable, or another bot holds it.
        KlingError: A non-transient API error (or any error with ``once``).
    """
    notice = on_notice or (lambda message: log.warning("%s", message))
    try:
        with exclusive_lock(state_file.with_name(state_file.name + ".lock")):
            return await _run(
                kling,
                state_file,
                handle,
                interval=interval,
                since=since,
                once=once,
                all_works=all_works,
                page_size=page_size,
                content_type=content_type,
                notice=notice,
            )
    except LockedError:
        raise BotUsageError(f"another watch is using {state_file}") from None


async def _run(
    kling: KlingSession,
    state_file: Path,
    handle: Handler,
    *,
    interval: float,
    since: int | None,
    once: bool,
    all_works: bool,
    page_size: int,
    content_type: str | None,
    notice: Callable[[str], None],
) -> WatchBotResult:
    state = load_watch_state(state_file)
    watcher = kling.watch_works(
        interval=interval,
        since=since if state is None else None,
        state=state,
        only_succeeded=not all_works,
        page_size=page_size,
        content_type=content_type,
        raw=True,
    )
    result = WatchBotResult()

    def save() -> None:
        atomic_write(state_file, watcher.state.to_json())

    failures = 0
    while True:
        gave_back: int | None = None  # the work given back by this poll
        try:
            async with aclosing(watcher.poll()) as works:
                async for work in works:
                    assert watcher.last_raw is not None
                    if await handle(work, _line(watcher.last_raw)):
                        result.handled += 1
                        save()
                    else:
                        watcher.give_back(work)
                        result.given_back += 1
                        gave_back = work.work_id
                        break
            save()
            result.polls += 1
            failures = 0
            delay = interval
        except TRANSIENT as exc:
            if once:
                raise
            delay = watcher.backoff(failures)
            failures += 1
            notice(f"{exc}; polling again in {delay:.0f} s")
        if once:
            return result
        if gave_back is not None:
            notice(f"work {gave_back} was not handled; polling again in {delay:.0f} s")
        await asyncio.sleep(delay)
