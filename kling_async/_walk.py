"""The page walk: the one place that turns ``pageNum`` requests into works.

Everything that walks pages (``iter_pages``, ``iter_works``, ``watch_works``, the export CLI)
goes through :class:`Walk`, which handles, in one loop:

* **pipelining**: up to ``prefetch`` pages requested ahead of the one being consumed, yielded
  strictly in page order, with one shared backoff state for all of them;
* **exactly once under offset drift**: works already seen in a bounded window of recent pages
  are skipped (new works at the head push older works onto later pages). When drift shows up
  while pages are in flight together, a page answered late may have shifted further than the
  next one and hidden works at their boundary; the walk then re-asks the recent pages one at a
  time and stays sequential until the drift has stopped for a few pages;
* **runaway guard**: pages that bring no new work several times in a row raise
  :class:`~kling_async.WalkStalledError` instead of looping forever;
* ``since`` (stop at the first page that reaches older works), ``max_items`` and ``max_pages``;
* **checkpoints** to resume a walk in another process.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from . import _http
from .errors import WalkStalledError
from .models import ASSETS_PAGE_DECODER, AssetsPage, Work

if TYPE_CHECKING:
    from ._retry import RetryState
    from ._session import KlingSession

__all__ = ["Walk", "WalkCheckpoint", "WalkStats", "WorkPage", "to_epoch_ms"]

log = logging.getLogger("kling_async")

#: Fresh pages in a row without drift before a walk that fell back to sequential pipelines again.
CALM_PAGES = 3


class _RawHistoryItem(msgspec.Struct, gc=False):
    works: list[msgspec.Raw] = msgspec.field(default_factory=list)


class _RawPage(msgspec.Struct, gc=False):
    history: list[_RawHistoryItem] = msgspec.field(default_factory=list)


_RAW_PAGE_DECODER = msgspec.json.Decoder(_RawPage)


class WorkPage(msgspec.Struct, kw_only=True, gc=False):
    """One page of a walk, as handed to the consumer.

    Attributes:
        page_num: The ``pageNum`` it was fetched with.
        page: The whole decoded page, as the API sent it (duplicates included).
        works: The works of this page the walk yields: new ones (not seen earlier in the
            walk), inside ``since`` and ``max_items``, in page order.
        raw_works: With ``raw=True``, each of ``works`` exactly as the API sent it (every
            field, camelCase keys, unknown fields included); else empty.
    """

    page_num: int
    page: AssetsPage
    works: list[Work]
    raw_works: list[msgspec.Raw]


class WalkStats(msgspec.Struct, kw_only=True):
    """Counters of a walk, for progress displays and summaries."""

    pages: int = 0
    """Pages received and processed by this run (the final empty page included)."""
    works: int = 0
    """Works yielded, counting those of the runs before a ``resume``."""
    requests: int = 0
    """HTTP requests sent, retries included."""
    retries: int = 0
    """Requests retried after a transient failure."""
    duplicates: int = 0
    """Works skipped because the walk had already yielded them (offset drift)."""
    refetches: int = 0
    """Prefetched pages asked again because the server built them before the page above
    (or, for the final empty page, because it cannot say): they may hide works."""
    drift_events: int = 0
    """Times drift was seen, without server times, while pages were in flight together (the
    walk then re-asked the recent pages one at a time)."""


class WalkCheckpoint(msgspec.Struct, kw_only=True):
    """Where a walk stands, to resume it elsewhere: ``kling.walk(resume=checkpoint)``.

    Serialisable with ``msgspec.json.encode``; decode it with ``msgspec.json.decode(data,
    type=WalkCheckpoint)``. The resumed walk takes its page size, content type, email and
    ``since`` from the checkpoint, skips works newer than the oldest one already yielded (they
    were yielded, or created after the walk began) and the recent ids it was handed.
    """

    next_page: int
    page_size: int
    content_type: str | None = None
    email: str | None = None
    since: int | None = None
    oldest_create_time: int | None = None
    recent_ids: list[int] = msgspec.field(default_factory=list)
    works: int = 0
    finished: bool = False


def to_epoch_ms(value: datetime | int | None, name: str = "since") -> int | None:
    """An aware datetime or epoch milliseconds, as epoch milliseconds.

    Raises:
        ValueError: A naive datetime, a negative number, or one that looks like epoch
            seconds (see :func:`kling_async._http.check_epoch_ms`).
        TypeError: Anything else.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime (give it a tzinfo)")
        return math.floor(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an aware datetime or epoch milliseconds (int)")
    return _http.check_epoch_ms(value, name)


class _Window:
    """Ids of the last ``pages`` pages, with O(1) membership."""

    __slots__ = ("_count", "_pages", "max_pages")

    def __init__(self, max_pages: int) -> None:
        self.max_pages = max_pages
        self._pages: deque[list[int]] = deque()
        self._count: dict[int, int] = {}

    def __contains__(self, item: int) -> bool:
        return item in self._count

    def add(self, ids: list[int]) -> None:
        self._pages.append(ids)
        count = self._count
        for i in ids:
            count[i] = count.get(i, 0) + 1
        while len(self._pages) > self.max_pages:
            for i in self._pages.popleft():
                left = count[i] - 1
                if left:
                    count[i] = left
                else:
                    del count[i]

    def ids(self) -> list[int]:
        return list(self._count)


class _Fetched(msgspec.Struct, gc=False):
    page: AssetsPage
    raw_works: list[msgspec.Raw] | None

    @property
    def served_at(self) -> int | None:
        """The server's clock when it built the page (``currentTimestamp``), if it says."""
        stamps = [i.current_timestamp for i in self.page.history if i.current_timestamp]
        return max(stamps) if stamps else None


async def _cancel_all(tasks: Iterable[asyncio.Task[_Fetched]]) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        # return_exceptions: a discarded page's error is retrieved, never reported as lost.
        await asyncio.gather(*tasks, return_exceptions=True)


class Walk:
    """A walk through the assets pages; create it with :meth:`KlingSession.walk`.

    Iterate it once (``async for batch in walk``) for :class:`WorkPage` batches. ``stats``
    and :meth:`checkpoint` may be read at any time, typically after each batch.
    """

    def __init__(
        self,
        kling: KlingSession,
        *,
        page_size: int,
        content_type: str | None,
        email: str | None,
        start_page: int,
        max_items: int | None,
        max_pages: int | None,
        since: datetime | int | None,
        prefetch: int,
        max_stale_pages: int,
        raw: bool,
        resume: WalkCheckpoint | None,
    ) -> None:
        if resume is not None:
            page_size = resume.page_size
            content_type = resume.content_type
            email = resume.email
            start_page = resume.next_page
        # Validates page number and size, content type and email before any request.
        _http.assets_params(
            page_num=start_page, page_size=page_size, content_type=content_type, email=email
        )
        for name, value in (("max_items", max_items), ("max_pages", max_pages)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{name} must be an int or None")
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
        if max_stale_pages < 1:
            raise ValueError(f"max_stale_pages must be >= 1, got {max_stale_pages}")
        self._kling = kling
        self.page_size = page_size
        self.content_type = content_type
        self.email = email
        self.max_items = max_items
        self.max_pages = max_pages
        self.since = resume.since if resume is not None else to_epoch_ms(since)
        self.prefetch = prefetch
        self.max_stale_pages = max_stale_pages
        self.raw = raw
        self._first_page = start_page
        self._next_page = start_page
        # Enough pages to cover the shift of a rewind after drift (see _run).
        self._seen = _Window(2 * prefetch + 4)
        self._skip_newer_than: int | None = None
        self._oldest: int | None = None  # oldest create_time yielded
        self._last_page_oldest: int | None = None  # oldest create_time of the last new page
        self._last_page_size = page_size + 1  # history length of the last new page
        self._yielded = 0
        self._finished = False
        self._started = False
        self._pages_requested = 0
        self._retry: RetryState = kling.new_retry_state()
        self.stats = WalkStats()
        if resume is not None:
            self._seen.add(list(resume.recent_ids))
            self._skip_newer_than = resume.oldest_create_time
            self._oldest = resume.oldest_create_time
            self._yielded = resume.works
            self._finished = resume.finished

    def checkpoint(self) -> WalkCheckpoint:
        """Where the walk stands after the last batch handed out."""
        return WalkCheckpoint(
            next_page=self._next_page,
            page_size=self.page_size,
            content_type=self.content_type,
            email=self.email,
            since=self.since,
            oldest_create_time=self._oldest,
            recent_ids=self._seen.ids(),
            works=self._yielded,
            finished=self._finished,
        )

    @property
    def finished(self) -> bool:
        """Whether the walk reached its end (an empty page, ``since``, or ``max_items``)."""
        return self._finished

    def __aiter__(self) -> AsyncGenerator[WorkPage, None]:
        if self._started:
            raise RuntimeError("a Walk can be iterated only once; start a new one")
        self._started = True
        return self._run()

    async def _fetch(self, page_num: int) -> _Fetched:
        kling = self._kling
        params = kling._params(page_num, self.page_size, self.content_type, self.email)
        body, url = await kling._get_bytes(kling._assets_url, params, self._retry)
        page = _http.decode(ASSETS_PAGE_DECODER, body, url=url)
        raws = _http.decode(_RAW_PAGE_DECODER, body, url=url) if self.raw else None
        return _Fetched(page, [w for item in raws.history for w in item.works] if raws else None)

    def _depth(self, pipelined: bool) -> int:
        """How many page requests to keep in flight now."""
        depth = 1 + (self.prefetch if pipelined else 0)
        if self.max_items is not None:
            # Every history entry holds at least one work, so more pages than this are never
            # needed: no request beyond need.
            remaining = max(0, self.max_items - self._yielded)
            depth = min(depth, math.ceil(remaining / self.page_size))
        if self.max_pages is not None:
            depth = min(depth, self.max_pages - self._pages_requested)
        return depth

    async def _run(self) -> AsyncGenerator[WorkPage, None]:
        if self._finished:
            return
        # (page, request, whether it was sent after the page before it had been received)
        pending: deque[tuple[int, asyncio.Task[_Fetched], bool]] = deque()
        next_request = self._next_page
        high_water = self._next_page - 1  # highest page processed
        last_page, last_served = 0, None  # the page processed last and its server time
        pipelined = self.prefetch > 0
        calm = 0
        stale = 0
        stats = self.stats
        try:
            while True:
                depth = self._depth(pipelined)
                while len(pending) < depth:
                    task = asyncio.create_task(self._fetch(next_request))
                    pending.append((next_request, task, not pending))
                    next_request += 1
                    self._pages_requested += 1
                if not pending:
                    self._finished = self.max_items is not None and self._yielded >= self.max_items
                    return
                page_num, task, causal = pending.popleft()
                fetched = await task
                stats.requests, stats.retries = self._retry.requests, self._retry.retries
                page = fetched.page
                served = fetched.served_at
                if not causal and page_num == last_page + 1 and page_num > high_water:
                    # Pages fetched together may be answered in any order. If this one was
                    # built before the page above it, works that arrived in between pushed
                    # that page's last works onto this one after it was built: they would be
                    # hidden. Ask again, now that the page above has been received. An empty
                    # page carries no server time, so it is always asked again (once).
                    out_of_order = (
                        not page.history
                        if served is None or last_served is None
                        else served < last_served
                    )
                    if out_of_order:
                        stats.refetches += 1
                        if not page.history:
                            # Past the end: what is in flight beyond it is surely empty too.
                            await _cancel_all(t for _, t, _ in pending)
                            pending.clear()
                            next_request = page_num + 1
                            pipelined = False
                        retask = asyncio.create_task(self._fetch(page_num))
                        pending.appendleft((page_num, retask, True))
                        continue
                stats.pages += 1
                last_page, last_served = page_num, served
                if not page.history:
                    self._finished = True
                    self._next_page = page_num
                    return

                works = page.works()
                raws = fetched.raw_works
                seen = self._seen
                page_ids: list[int] = []
                on_page: set[int] = set()
                new_idx: list[int] = []
                for i, work in enumerate(works):
                    wid = work.work_id
                    if wid is not None:
                        # Every id of the page, duplicates too, so that works still drifting
                        # across pages stay in the window.
                        page_ids.append(wid)
                        if wid in seen or wid in on_page:
                            continue
                        on_page.add(wid)
                    new_idx.append(i)
                overlap = len(works) - len(new_idx)
                # Progress means reaching further back in time than the previous page: pages of
                # new arrivals and works already seen, or the same page again, make none.
                times = [w.create_time for w in works if w.create_time is not None]
                page_oldest = min(times) if times else None
                seen.add(page_ids)
                stats.duplicates += overlap
                if overlap:
                    log.debug("page %d: skipped %d works already yielded", page_num, overlap)

                fresh_page = page_num > high_water
                if fresh_page:
                    high_water = page_num
                    if page_oldest is None:
                        progress = bool(new_idx)
                    else:
                        last = self._last_page_oldest
                        size = len(page.history)
                        # At the tail, arrivals re-serve the last works on ever shorter pages:
                        # a shrinking short page is progress towards the end.
                        progress = (
                            last is None
                            or page_oldest < last
                            or size < min(self.page_size, self._last_page_size)
                        )
                        self._last_page_oldest = page_oldest
                        self._last_page_size = size
                    if not progress:
                        stale += 1
                        if stale >= self.max_stale_pages:
                            raise WalkStalledError(page_num, stale)
                    else:
                        stale = 0
                    if overlap and pipelined and served is None:
                        # Without server times to order the answers (see above), overlap is the
                        # evidence: works moved while pages were in flight together, so a page
                        # answered late may have hidden works at a boundary. Drop what is in
                        # flight, re-ask the recent pages one at a time (the window skips what
                        # was already yielded), and stay sequential while the drift lasts.
                        stats.drift_events += 1
                        pipelined = False
                        calm = 0
                        await _cancel_all(t for _, t, _ in pending)
                        pending.clear()
                        next_request = max(self._first_page, page_num - self.prefetch)
                        log.debug(
                            "drift at page %d: sequential from page %d", page_num, next_request
                        )
                    elif not pipelined and self.prefetch:
                        calm = 0 if overlap else calm + 1
                        if calm >= CALM_PAGES:
                            pipelined = True

                since = self.since
                skip_newer = self._skip_newer_than
                reached_since = False
                keep: list[int] = []
                for i in new_idx:
                    created = works[i].create_time
                    if created is not None:
                        if since is not None and created <= since:
                            reached_since = True
                            continue
                        if skip_newer is not None and created > skip_newer:
                            continue
                    keep.append(i)
                if self.max_items is not None:
                    keep = keep[: max(0, self.max_items - self._yielded)]

                batch = WorkPage(
                    page_num=page_num,
                    page=page,
                    works=[works[i] for i in keep],
                    raw_works=[raws[i] for i in keep] if raws is not None else [],
                )
                for work in batch.works:
                    created = work.create_time
                    if created is not None and (self._oldest is None or created < self._oldest):
                        self._oldest = created
                self._yielded += len(keep)
                stats.works = self._yielded
                self._next_page = max(self._next_page, page_num + 1)
                done = reached_since or (
                    self.max_items is not None and self._yielded >= self.max_items
                )
                if done:
                    self._finished = True
                yield batch
                if done:
                    return
        finally:
            await _cancel_all(t for _, t, _ in pending)
            stats.requests, stats.retries = self._retry.requests, self._retry.retries
