"""watch_works: poll for new works, each yielded exactly once, across restarts."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from ._walk import to_epoch_ms
from .errors import DecodeError, RateLimitError, ServerError, TransportError, WalkStalledError
from .models import Work

if TYPE_CHECKING:
    from ._session import KlingSession

__all__ = ["WatchState", "Watcher"]

log = logging.getLogger("kling_async")

#: Errors a watch rides out (with backoff) instead of ending. A stalled poll (a burst of a
#: page or more of new works per request) is worth another try later, too.
TRANSIENT = (RateLimitError, ServerError, TransportError, DecodeError, WalkStalledError)


class WatchState(msgspec.Struct, kw_only=True):
    """What a watcher has delivered, small enough to save after every work.

    Save it (``state.to_json()``) after handling each work and hand it back
    (``WatchState.from_json(data)``) to ``watch_works(state=...)`` after a restart: the new
    watcher neither repeats nor misses a work.

    Attributes:
        watermark: ``create_time`` (epoch ms) up to which, inclusive, every work has been
            handled (yielded, held as pending, or there before the watch began).
        delivered: Ids of newer works already handled by a poll still under way: what a
            restart in the middle of a poll must not repeat.
        pending: Works seen while still rendering, held back until they succeed:
            ``work_id -> create_time``.
    """

    watermark: int | None = None
    delivered: list[int] = msgspec.field(default_factory=list)
    pending: dict[int, int] = msgspec.field(default_factory=dict)

    def to_json(self) -> bytes:
        """This state as JSON bytes."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> WatchState:
        """A state saved with :meth:`to_json`.

        Raises:
            msgspec.ValidationError: The data is not a saved state.
        """
        return msgspec.json.decode(data, type=cls)


class Watcher:
    """An async iterator of new works; create it with :meth:`KlingSession.watch_works`.

    ``state`` is always up to date with what has been yielded.
    """

    def __init__(
        self,
        kling: KlingSession,
        *,
        interval: float,
        since: datetime | int | None,
        only_succeeded: bool,
        state: WatchState | None,
        page_size: int,
        content_type: str | None,
        email: str | None,
        max_backoff: float,
        max_pending: int,
        max_pending_age: float = 6 * 3600.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        # Validate the walk's arguments now rather than at the first poll.
        kling.walk(page_size=page_size, content_type=content_type, email=email)
        self._kling = kling
        self.interval = interval
        self.only_succeeded = only_succeeded
        self.page_size = page_size
        self.content_type = content_type
        self.email = email
        self.max_backoff = max(max_backoff, interval)
        self.max_pending = max_pending
        self.max_pending_age = max_pending_age
        if state is None:
            state = WatchState(watermark=to_epoch_ms(since))
        elif since is not None:
            raise ValueError("pass either since or state, not both")
        self.state = state
        self.polls = 0
        self._gen = self._run()

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> Work:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop the watch."""
        await self._gen.aclose()

    async def _first_watermark(self) -> None:
        """With neither since nor state: start from the newest work, by the server's clock."""
        page = await self._kling.get_assets(
            page_size=self.page_size, content_type=self.content_type, email=self.email
        )
        times = [w.create_time for w in page.works() if w.create_time is not None]
        newest = max(times, default=0)
        self.state.watermark = newest

    async def _poll(self) -> AsyncGenerator[Work, None]:
        """One walk from page 1 down to the watermark (or the oldest pending work)."""
        state = self.state
        watermark = state.watermark or 0
        # A work that never succeeds (failed, deleted) must not keep every poll walking deep.
        too_old = watermark - int(self.max_pending_age * 1000)
        for stale_id in [w for w, created in state.pending.items() if created < too_old]:
            del state.pending[stale_id]
            log.debug("watch: gave up on pending work %d (older than max_pending_age)", stale_id)
        floor = min([watermark, *state.pending.values()])
        delivered = set(state.delivered)
        seen_now: dict[int, int] = {}  # new works of this poll: id -> create_time
        walk = self._kling.walk(
            page_size=self.page_size,
            content_type=self.content_type,
            email=self.email,
            since=max(0, floor - 1),  # pending works may sit exactly on the floor
        )
        async with aclosing(walk.__aiter__()) as batches:
            async for batch in batches:
                for work in batch.works:
                    wid, created = work.work_id, work.create_time
                    if wid is None or created is None:
                        continue
                    if wid in state.pending:
                        if work.succeeded or not self.only_succeeded:
                            del state.pending[wid]
                            yield work
                        continue
                    if created <= watermark:
                        continue
                    if wid in delivered:
                        # Handled by an earlier, interrupted poll: the watermark must cover it.
                        seen_now[wid] = created
                        continue
                    delivered.add(wid)
                    seen_now[wid] = created
                    # Recorded before the work is handed out: save the state after handling it.
                    state.delivered.append(wid)
                    if self.only_succeeded and not work.succeeded:
                        self._hold(wid, created)
                        continue
                    yield work
        # The whole poll is handled: everything up to its newest work is done.
        state.watermark = max(seen_now.values(), default=watermark)
        state.delivered = []

    def _hold(self, work_id: int, created: int) -> None:
        pending = self.state.pending
        pending[work_id] = created
        while len(pending) > self.max_pending:
            oldest = min(pending, key=pending.__getitem__)
            del pending[oldest]
            log.debug(
                "watch: dropped pending work %d (more than %d pending)", oldest, self.max_pending
            )

    async def _run(self) -> AsyncGenerator[Work, None]:
        failures = 0
        while True:
            try:
                if self.state.watermark is None:
                    await self._first_watermark()
                else:
                    async with aclosing(self._poll()) as works:
                        async for work in works:
                            yield work
                self.polls += 1
                failures = 0
                delay = self.interval
            except TRANSIENT as exc:
                delay = min(self.max_backoff, self.interval * 2**failures)
                failures += 1
                log.warning("watch: %s; polling again in %.1f s", exc, delay)
            await self._kling._sleep(delay)  # close() ends it
