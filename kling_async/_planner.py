"""The page-walk planner: every decision of a walk, with no I/O.

The assets list is paged by offset (``pageNum``, ``pageSize``) and newest first, so works
created during a walk push older works onto later pages. A walk yields every work that existed
when it began exactly once if it reads pages in an order the server served them in: then each
page starts at or before where the page above it ended, and an id seen on the page above is a
duplicate, never a gap. Pages fetched together may be served in any order, so the planner only
hands a page out once it has *proved* that the page above it was served no later:

* **causally**: the page was requested after the answer of the page above arrived;
* **by overlap**: the page holds a work of the page above (works only move down the list, so
  the page above was served first);
* **by head probes**: a one-work request for the head of the list (``pageNum=1&pageSize=1``)
  answered before a page was requested, and another sent after the page above was received,
  show the same head: nothing arrived in between, both pages saw the same list.

The server's ``currentTimestamp`` is never read. When the proof fails (works arrived while
pages were in flight and an answer came late), the page is asked again and the walk goes on
one page at a time for a while. The planner also adapts to a server that caps ``pageSize``,
tells a repeated last page from the end, keeps the state a resume needs (a checkpoint that
finds its place by the ids yielded last, not by times), and guards against runaway walks.

The driver (:mod:`kling_async._walk`) sends the requests the planner asks for, feeds every
answer back in whatever order it arrives, and yields the batches the planner releases. The
simulation in ``tests/test_planner_sim.py`` checks the contract over generated schedules.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection, Hashable, Iterable, Sequence
from typing import Final, Generic, TypeVar

import msgspec

from .errors import ResumeError, WalkStalledError

__all__ = [
    "CHECKPOINT_VERSION",
    "Answer",
    "AutoPrefetch",
    "Batch",
    "PlanRequest",
    "Planner",
    "WalkCheckpoint",
    "WalkStats",
]

log = logging.getLogger("kling_async")

P = TypeVar("P")

#: The format of :class:`WalkCheckpoint`; older checkpoints are refused with a clear error.
CHECKPOINT_VERSION: Final = 2
#: Sequential pages without arrivals before a walk that fell back to one page at a time
#: pipelines again; doubled when a pipelined stretch is cut short within 8 times this many
#: pages (up to :data:`MAX_CALM_PAGES`), back to this after a long one.
CALM_PAGES: Final = 3
MAX_CALM_PAGES: Final = 96
#: Requests remembered (sent and received when) to count those that may have been served
#: between two pages.
_LOG_REQUESTS: Final = 512


class WalkCheckpoint(msgspec.Struct, kw_only=True):
    """Where a walk stands, to resume it elsewhere: ``kling.walk(resume=checkpoint)``.

    It only ever describes verified state: every work the walk handed out up to it, and no
    other. The resumed walk asks ``next_page`` again and reads on until it finds
    ``anchor_ids`` (the page holding the last work yielded, in list order, ending with it);
    everything after that point is new to it, however many works arrived in between. Each
    ``page_size`` works that arrived in between cost one more request.

    Save it with :meth:`to_json` (or ``msgspec.json.encode``), load it with
    :meth:`from_json`.

    Attributes:
        version: The checkpoint format (:data:`CHECKPOINT_VERSION`).
        next_page: The page the resumed walk asks first.
        page_size: History entries per request, as in use (after a page-size cap).
        size_proven: A full page of ``page_size`` was served: the server does not cap it.
        content_type: The walk's ``contentType`` filter.
        email: The Kling account.
        since: The walk's ``since`` (epoch ms), if any.
        anchor_ids: Work ids of the page where the walk's place is, in list order: the page
            the work furthest down the list that was handed out (or skipped as handed out
            before) came on, up to that work. Empty before the first page.
        recent_ids: Ids of the last pages (already yielded), skipped by the resumed walk.
        works: Works yielded so far, across resumes.
        finished: The walk reached its end; a resumed walk yields nothing.
    """

    version: int = CHECKPOINT_VERSION
    next_page: int
    page_size: int
    size_proven: bool = False
    content_type: str | None = None
    email: str | None = None
    since: int | None = None
    anchor_ids: list[int] = msgspec.field(default_factory=list)
    recent_ids: list[int] = msgspec.field(default_factory=list)
    works: int = 0
    finished: bool = False

    def to_json(self) -> bytes:
        """This checkpoint as JSON bytes."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> WalkCheckpoint:
        """A checkpoint saved with :meth:`to_json`.

        Raises:
            ValueError: The data is not a checkpoint of this format (one line saying why).
        """
        try:
            raw = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a walk checkpoint: {exc}") from None
        return cls.from_builtins(raw)

    @classmethod
    def from_builtins(cls, raw: object) -> WalkCheckpoint:
        """A checkpoint from decoded JSON (a dict), checked field by field.

        Raises:
            ValueError: Not a checkpoint, a checkpoint of another format, or one whose values
                cannot be right.
        """
        if not isinstance(raw, dict):
            raise ValueError("not a walk checkpoint (expected a JSON object)")
        version = raw.get("version", 1)
        if version != CHECKPOINT_VERSION:
            raise ValueError(
                f"walk checkpoint format {version!r} is not supported (this kling-async writes "
                f"format {CHECKPOINT_VERSION}); start the walk again"
            )
        try:
            checkpoint = msgspec.convert(raw, cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"damaged walk checkpoint: {exc}") from None
        checkpoint.validate()
        return checkpoint

    def validate(self) -> None:
        """Check the values a hand-edited checkpoint could break.

        Raises:
            ValueError: A value out of range.
        """
        if self.version != CHECKPOINT_VERSION:
            raise ValueError(f"walk checkpoint format {self.version} is not supported")
        if self.next_page < 1:
            raise ValueError(f"damaged walk checkpoint: next_page {self.next_page} is below 1")
        if self.page_size < 1:
            raise ValueError(f"damaged walk checkpoint: page_size {self.page_size} is below 1")
        if self.works < 0:
            raise ValueError(f"damaged walk checkpoint: works {self.works} is negative")


class PlanRequest(msgspec.Struct, frozen=True, gc=False):
    """A request the planner wants sent: ``GET /assets/?pageNum=&pageSize=``.

    ``probe`` requests ask for the head of the list (page 1, size 1); their works are never
    yielded.
    """

    id: int
    page_num: int
    page_size: int
    probe: bool = False


class Answer(Generic[P]):
    """What the planner reads of one answer; ``payload`` (the decoded page) rides along.

    ``head`` (what tells one head of the list from another) is read only of answers to page
    1 (head probes, and page 1 serving as one): other answers may leave it None.
    """

    __slots__ = ("head", "id_set", "ids", "n_entries", "payload", "times")

    def __init__(
        self,
        *,
        n_entries: int,
        ids: Sequence[int],
        head: Hashable,
        payload: P,
        times: Sequence[int | None] | None = None,
    ) -> None:
        self.n_entries = n_entries
        self.ids = ids
        self.id_set = frozenset(ids)  # for the set operations of every page
        self.head = head
        self.payload = payload
        self.times = times


class Batch(Generic[P]):
    """A page released to the consumer: the indices (into ``Answer.ids``) of works to yield."""

    __slots__ = ("keep", "page_num", "payload")

    def __init__(self, page_num: int, payload: P, keep: Sequence[int]) -> None:
        self.page_num = page_num
        self.payload = payload
        self.keep = keep


class WalkStats(msgspec.Struct, kw_only=True):
    """Counters of a walk, for progress displays and summaries."""

    pages: int = 0
    """Pages handed out by this run, the final empty page included."""
    works: int = 0
    """Works yielded, counting those of the runs before a ``resume``."""
    requests: int = 0
    """HTTP requests sent (head probes and retries included)."""
    retries: int = 0
    """Requests retried after a transient failure."""
    duplicates: int = 0
    """Works skipped because the walk had already yielded them (offset drift)."""
    refetches: int = 0
    """Pages asked again: answered out of order while works arrived, or served twice."""
    drift_events: int = 0
    """Times a page answered out of order could have hidden works (the walk then asked
    again and went on one page at a time for a while)."""
    probes: int = 0
    """Head probes sent (``pageNum=1&pageSize=1``) to prove pages fetched together saw the
    same list."""
    page_size_caps: int = 0
    """Times the server was found to serve fewer entries per page than asked."""
    page_size: int = 0
    """The page size in use (smaller than asked after a cap)."""
    drift_fields: int = 0
    """Fields of works that arrived with an unexpected type (schema drift): each was
    converted where lossless, else read as None; the export still writes it as sent."""


class _Mark:
    """When a request was sent and received (0: not yet, or never): what the log keeps of
    it, so that it holds no answer."""

    __slots__ = ("emit", "recv", "rid")

    def __init__(self, rid: int, emit: int) -> None:
        self.rid = rid
        self.emit = emit
        self.recv = 0


class _Slot(Generic[P]):
    """One request of the walk and what is known of when it was served."""

    __slots__ = (
        "answer",
        "covers",
        "emit_seq",
        "failed",
        "hi",
        "lo",
        "mark",
        "recv_seq",
        "refetch",
        "req",
        "solo",
        "wave",
    )

    def __init__(self, req: PlanRequest, emit_seq: int, lo: int | None) -> None:
        self.req = req
        self.emit_seq = emit_seq
        self.recv_seq = 0
        self.mark = _Mark(req.id, emit_seq)
        # Epochs of the head probes around it: lo, the last probe answered before it was
        # sent; hi, the first probe sent after it was received.
        self.lo = lo
        self.hi: int | None = None
        self.answer: Answer[P] | None = None
        self.failed = False
        self.solo = False  # sent with nothing else in flight, nothing else sent until answered
        self.refetch = False  # a page asked again
        self.wave = 0  # answers received before it was sent: pages sent together share it
        self.covers: list[_Slot[P]] = []  # for a probe: the slots whose hi it decides


class _Window:
    """The ids the walk saw last (at least what an LRU of ``max_ids`` would hold), with O(1)
    lookups.

    Two generations: ids go to the young one; once ``max_ids`` ids new to the window have
    been added to it, it becomes the old one and the old one is dropped. An id is dropped
    only after ``max_ids`` new ids came after its last add or touch, as an LRU of ``max_ids``
    would have dropped it too. Ids seen again (:meth:`touch`, or added again) go to the young
    generation, so works still drifting across pages stay in; a page of works already seen
    pushes nothing out. A page costs a few set operations in C, not a step per id.
    """

    __slots__ = ("_added", "_new", "_old", "max_ids")

    def __init__(self, max_ids: int) -> None:
        self.max_ids = max_ids
        self._new: set[int] = set()
        self._old: set[int] = set()
        self._added = 0  # ids new to the window added since the young generation began

    def __contains__(self, item: int) -> bool:
        return item in self._new or item in self._old

    def any_of(self, ids: Iterable[int]) -> bool:
        """Whether any of ``ids`` is here."""
        return not (self._new.isdisjoint(ids) and self._old.isdisjoint(ids))

    def add(self, ids: Collection[int], *, new: bool = False) -> None:
        """Note ``ids`` as seen (``new``: the caller knows none of them is here)."""
        young, old = self._new, self._old
        before = len(young)
        young.update(ids)
        if new:
            self._added += len(young) - before
        else:
            # New to the young generation, less those it took from the old one (an
            # undercount when some were in both: it only keeps ids longer).
            self._added += len(young) - before - (len(old.intersection(ids)) if old else 0)
        if self._added >= self.max_ids:
            self._old, self._new, self._added = young, set(), 0

    def touch(self, ids: Iterable[int]) -> None:
        """Refresh those of ``ids`` that are here; add none, drop none."""
        old = self._old
        self._new.update([i for i in ids if i in old])

    def ids(self) -> list[int]:
        """The ids, the older generation first."""
        young = self._new
        return [*(self._old - young), *young]


class _Check(Generic[P]):
    """A full page served again for the next page: the end, or a page of arrivals?"""

    __slots__ = ("above", "again", "page_num")

    def __init__(self, page_num: int) -> None:
        self.page_num = page_num
        self.above: _Slot[P] | None = None
        self.again: _Slot[P] | None = None


class Planner(Generic[P]):
    """Decides a walk: which pages to ask, which answers to trust, what to yield.

    Use: send :meth:`take_requests`, cancel :meth:`take_cancels`, feed answers with
    :meth:`receive` (or :meth:`receive_failure`) in any order, and hand out each
    :meth:`next_batch` until it returns ``None``; then, unless :attr:`done`, wait for the
    next answer. :meth:`checkpoint` describes the state after the last batch released.

    Args:
        page_size: History entries per request.
        start_page: The first page (ignored with ``resume``).
        prefetch: Pages requested ahead of the one being handed out (0: one at a time).
        max_items: Release at most this many works.
        max_pages: Ask for at most this many page requests (pages asked again count, head
            probes do not).
        since: Release only works created after this (epoch ms); stop at the first page that
            reaches older works (this assumes ``createTime`` decreases down the list).
        max_stale_pages: Raise :class:`WalkStalledError` after this many pages in a row
            bring nothing new.
        resume: A checkpoint to continue from (its page size, ``since`` and place win).
    """

    def __init__(
        self,
        *,
        page_size: int,
        start_page: int = 1,
        prefetch: int = 0,
        max_items: int | None = None,
        max_pages: int | None = None,
        since: int | None = None,
        max_stale_pages: int = 3,
        resume: WalkCheckpoint | None = None,
    ) -> None:
        self.size = page_size
        self.size_proven = False
        self.prefetch = prefetch
        self.max_items = max_items
        self.max_pages = max_pages
        self.since = since
        self.max_stale_pages = max_stale_pages
        self.stats = WalkStats(page_size=page_size)
        self.finished = False
        self.failed_request: int | None = None
        # The walk's place: pages up to _delivered are handed out. The anchor is the page
        # holding the work furthest down the list that was handed out (its ids up to it).
        self._delivered = start_page - 1
        self._anchor_page = start_page
        self._anchor: Sequence[int] = ()
        self._searching = False  # skip works until an anchor id shows up
        self._resumed_search = False  # the search is a resume's
        self._search_set: frozenset[int] = frozenset()
        self._yielded = 0
        self._first_page = start_page  # the first page of this walk at this size
        recent: list[int] = []
        if resume is not None:
            resume.validate()
            self.size = self.stats.page_size = resume.page_size
            self.size_proven = resume.size_proven
            self.since = resume.since
            self._yielded = self.stats.works = resume.works
            self.finished = resume.finished
            self._delivered = resume.next_page - 1
            self._first_page = self._anchor_page = resume.next_page
            self._anchor = list(resume.anchor_ids)
            if self._anchor:
                self._searching = self._resumed_search = True
                self._search_set = frozenset(self._anchor)
            recent = list(resume.recent_ids)
        # Enough pages to recognise works pushed down by what arrives while the pages in
        # flight and in the buffer are served.
        self._seen = _Window(self._window_ids(prefetch))
        if recent:
            self._seen.add(recent)
        self._last: _Slot[P] | None = None  # the slot of the last page handed out
        self._last_ids: Sequence[int] = ()
        self._last_set: frozenset[int] = frozenset()  # the same ids, for overlap tests
        self._last_entries = 0
        self._stale = 0
        self._loose = 0  # pages in a row that brought nothing, with other requests between
        self._tail = self.size
        # Requests. _seq orders every send and receipt, the causal clock of the walk.
        self._seq = 0
        self._received = 0
        self._next_id = 0
        self._by_id: dict[int, _Slot[P]] = {}
        self._log: deque[_Mark] = deque(maxlen=_LOG_REQUESTS)  # every request, recent
        self._peek = 0  # a search for the place begun on the page after the place's page
        self._pages: dict[int, _Slot[P]] = {}  # page_num -> its current request
        self._next_emit = self._delivered + 1
        self._page_requests = 0
        self._out: list[PlanRequest] = []
        self._cancels: list[int] = []
        # Head probes: at most one in flight, so that they are totally ordered; the epoch
        # counts the changes of head they saw.
        self._probe: _Slot[P] | None = None
        self._epoch: int | None = None
        self._head: Hashable = None
        self._need_hi: list[_Slot[P]] = []
        # Pipelining: on while prefetch > 0, off for a calm stretch after a page had to be
        # asked again; back on after a fresh head probe.
        self._pipelined = prefetch > 0
        self._repipeline = False
        self._fallback = False  # one page at a time after pipelining was cut short
        self._calm = 0
        self._calm_needed = CALM_PAGES
        self._pipelined_run = 0
        self._arrivals_seen = -(10**9)  # the last page handed out that showed works arriving
        self._arrival_rate = 0.0  # how often pages asked one at a time show works arriving
        self._check: _Check[P] | None = None
        self._solo = False  # the next page goes alone
        self._refetch_page = 0
        self._solo_until = 0  # pages up to this one go alone, with no probe in between
        self._solo_slot: _Slot[P] | None = None
        self._checked = 0  # the page a check found to be a normal page
        self._unpumped = False  # an answer came in and _pump() has not run since
        # No since, max_items or max_pages: the one-page-at-a-time shortcut may apply.
        self._plain = self.since is None and max_items is None and max_pages is None
        # A short first page while the page size is unproven: (page_num, entries).
        self._short: tuple[int, int] | None = None
        self._confirming = False
        self._first_full = False  # page 1 came back full at the size asked
        if max_items is not None and self._yielded >= max_items:
            self.finished = True  # nothing left to hand out (a resume past max_items)
        if not self.finished:
            self._pump()
            if prefetch > 0 and self._probe is None and self._depth() > 0:
                self._emit(1, 1, probe=True)

    def _window_ids(self, prefetch: int) -> int:
        # Works pushed down by what arrives while every page in flight or buffered, and a
        # probe, are served: a page of arrivals per request at most (beyond, walks stall).
        return (6 * (prefetch + 1) + 8) * self.size

    # -- the driver's side --------------------------------------------------------------

    @property
    def done(self) -> bool:
        """No more batches will come (finished, stopped by ``max_pages``, or failed)."""
        if self.finished or self.failed_request is not None:
            return True
        if self._out:
            return False
        if (
            self._at_max_pages()
            and self._pages.get(self._delivered + 1) is None
            and self._check is None
        ):
            return True  # max_pages spent and the next page not asked: nothing more can come
        return not self._by_id

    @property
    def page_size(self) -> int:
        """The page size in use."""
        return self.size

    @property
    def pending(self) -> bool:
        """Requests to send or to cancel are waiting to be taken."""
        return bool(self._out or self._cancels)

    def take_requests(self) -> list[PlanRequest]:
        """Requests to send now (each exactly once, in this order)."""
        out, self._out = self._out, []
        return out

    def sole_request(self) -> PlanRequest | None:
        """The request to send when it is all there is to do, taken (as by
        :meth:`take_requests`); else None, nothing taken.

        One page at a time, the next page asked and unanswered, nothing else to send or
        cancel: until its answer, :meth:`next_batch` returns None and :attr:`done` is False,
        so a driver may send it and wait for it without asking them. The planner sim checks
        this against those steps after every batch of walks of every kind; some tests below
        are implied by others (a stopped or failed walk has the request cancelled too).
        """
        out = self._out
        if (
            len(out) != 1
            or self.prefetch
            or self._cancels
            or self._unpumped
            or self._check is not None
            or self.finished
            or self.failed_request is not None
            or len(self._by_id) != 1
        ):
            return None
        req = out[0]
        slot = self._pages.get(self._delivered + 1)
        if slot is None or slot.req is not req or slot.answer is not None or slot.failed:
            return None
        self._out = []
        return req

    def take_cancels(self) -> list[int]:
        """Ids of requests sent earlier whose answers are no longer wanted."""
        out, self._cancels = self._cancels, []
        return out

    def set_prefetch(self, prefetch: int) -> None:
        """Change the depth of the pipeline mid-walk (from the next request on)."""
        self.prefetch = max(0, prefetch)
        self._seen.max_ids = max(self._seen.max_ids, self._window_ids(self.prefetch))
        if self.prefetch == 0:
            self._pipelined = self._repipeline = False
        elif not self._pipelined and not self._repipeline and not self._fallback:
            self._repipeline = True  # a fresh head probe first, as after a calm stretch
        self._pump()

    def finish(self) -> None:
        """End the walk here (a stop condition of the caller's): nothing more is asked."""
        self.finished = True
        self._cancel_all()

    def receive(self, req_id: int, answer: Answer[P]) -> None:
        """The answer to a request; ignored if it was cancelled."""
        slot = self._by_id.get(req_id)
        if slot is None or self.finished:
            return
        self._seq += 1
        self._received += 1
        slot.recv_seq = slot.mark.recv = self._seq
        slot.answer = answer
        if slot is self._probe:
            self._probe_answered(slot, answer)
            if slot.req.probe or self._pages.get(slot.req.page_num) is not slot:
                del self._by_id[req_id]  # a page 1 cancelled as a page, kept as a probe
        else:
            self._need_hi.append(slot)
            self._note_arrivals(slot)
            next_page = slot.req.page_num == self._delivered + 1
            if not self.prefetch and next_page and self._check is None:
                # One page at a time: nothing else to send until next_batch() hands it out
                # (and sends what follows); pumping here would only decide it twice.
                self._unpumped = True
                return
        self._pump()

    def _note_arrivals(self, slot: _Slot[P]) -> None:
        """A page sharing a work with the page above or below it, both in hand: works
        arrived between the two (its proof will most likely fail; see _arriving)."""
        answer = slot.answer
        n = slot.req.page_num
        if answer is None or not answer.ids or self._pages.get(n) is not slot:
            return
        for other_num in (n - 1, n + 1):
            if other_num == self._delivered and self._last is not None:
                other_ids: Iterable[int] = self._last_set
            else:
                other = self._pages.get(other_num)
                if other is None or other.answer is None:
                    continue
                other_ids = other.answer.ids
            if not answer.id_set.isdisjoint(other_ids):
                self._arrivals_seen = max(self._arrivals_seen, self._delivered)
                return

    def receive_failure(self, req_id: int) -> None:
        """A request failed for good (after the driver's retries)."""
        slot = self._by_id.get(req_id)
        if slot is None or self.finished:
            return
        slot.failed = True
        if slot is self._probe:
            self.failed_request = req_id
        self._pump()

    def next_batch(self) -> Batch[P] | None:
        """The next page to hand out, or ``None`` until more answers arrive.

        Raises:
            WalkStalledError: Pages stopped bringing anything new.
            ResumeError: A resumed walk reached the end without finding its place.
        """
        if self._plain and not self.prefetch:
            batch = self._next_in_sequence()
            if batch is not None:
                return batch
        while not self.finished and self.failed_request is None:
            progressed, batch = self._advance()
            if progressed or self._unpumped:
                # Nothing changed since the last pump otherwise, and a pump with nothing
                # changed sends nothing.
                self._unpumped = False
                self._pump()
            if batch is not None:
                return batch
            if not progressed:
                return None
        return None

    def receive_in_sequence(self, req_id: int, answer: Answer[P]) -> Batch[P] | None:
        """:meth:`receive` and then :meth:`next_batch`, in one step, for the usual answer one
        page at a time; else None, having changed nothing (call :meth:`receive`).

        The usual answer: to the one request out (the next page, as :meth:`sole_request`
        gives it), nothing waiting to be sent or cancelled, and a page that
        :meth:`_next_in_sequence` would hand out. A driver that awaited that request alone
        hands the batch out at once: what it would do between the two calls (send what is
        pending) has nothing to do. ``tests/test_planner_sim.py`` compares this with the two
        calls, on the general path, at every answer of its step-by-step and any-walk runs;
        those send what is pending before they answer, so the guards on what is pending and
        on the request's id (implied there by the one request in flight) are tested apart: an
        answer under another request's id, one before its request was taken, one with a
        cancel not yet taken.
        """
        n = self._delivered + 1
        slot = self._pages.get(n)
        if (
            slot is None
            or slot.req.id != req_id
            or self.prefetch
            or not self._plain
            or self._out
            or self._cancels
            or not self._usual(n, slot, answer)
        ):
            return None
        # What receive() does with it: _note_arrivals() finds nothing (no other page is in
        # hand, and none of its works is on the page above: _usual), and one page at a time
        # nothing is pumped before next_batch().
        self._seq += 1
        self._received += 1
        slot.recv_seq = slot.mark.recv = self._seq
        slot.answer = answer
        self._need_hi.append(slot)
        return self._in_sequence(n, slot, answer)

    def _next_in_sequence(self) -> Batch[P] | None:
        """The usual page one page at a time, handed out and the next one asked, in one step
        (see :meth:`_usual`); else None, having changed nothing, and the general path
        (:meth:`_advance`, :meth:`_deliver`, then :meth:`_pump`) decides.

        ``tests/test_planner_sim.py`` runs every schedule both ways and requires the same
        requests, batches, checkpoints and planner state, after every batch and after every
        step (with depth changes and resumes).
        """
        n = self._delivered + 1
        slot = self._pages.get(n)
        if slot is None or slot.answer is None:
            return None  # not answered yet (the usual case when asked before the answer)
        if not self._usual(n, slot, slot.answer):
            return None
        return self._in_sequence(n, slot, slot.answer)

    def _usual(self, n: int, slot: _Slot[P], answer: Answer[P]) -> bool:
        """Whether ``answer``, to page ``n``'s request in ``slot``, is the usual page one page
        at a time, which the general path would hand out whole and then ask the next page:
        the one request out, asked right after the page above was received with nothing
        else in flight (so it is the next stretch: see :meth:`_adjacent`), full at a proven
        size, holding only works never seen and no repeat.

        Some of the tests are implied by others (pages in flight are in ``_by_id``; a
        check, a probe or a solo refetch means another request or none in hand); they stay,
        as the statement of the one state :meth:`_in_sequence` knows how to handle.
        """
        last = self._last
        if (
            last is None
            or slot.failed  # an answer after the request was reported failed: the failure wins
            or len(self._pages) != 1
            or len(self._by_id) != 1
            or self.finished
            or self.failed_request is not None
            or self._check is not None
            or self._searching
            or self._peek
            or self._short is not None
            or self._confirming
            or self._solo
            or self._solo_slot is not None
            or self._probe is not None
            or self._repipeline
            or not self.size_proven
            or answer.n_entries != self.size
            or self._by_id.get(slot.req.id) is not slot
            or not self._tight(slot, last)
        ):
            return False
        ids, id_set, anchor = answer.ids, answer.id_set, self._anchor
        return not (
            not ids
            or len(id_set) != len(ids)
            or not anchor
            or anchor[-1] in id_set
            or not self._last_set.isdisjoint(id_set)
            or self._seen.any_of(id_set)
        )

    def _in_sequence(self, n: int, slot: _Slot[P], answer: Answer[P]) -> Batch[P]:
        """What the general path does with the usual page ``n`` (:meth:`_usual`): hand it
        out whole (:meth:`_deliver`), then ask the next page (:meth:`_pump`, which sends no
        head probe one page at a time)."""
        ids = answer.ids
        del self._pages[n]
        del self._by_id[slot.req.id]
        self.stats.pages += 1
        keep = range(len(ids))
        self._seen.add(answer.id_set, new=True)
        self._stale = self._loose = 0
        self._tail = self.size
        self._anchor, self._anchor_page = ids, n
        batch = self._hand_out(n, slot, keep)
        self._unpumped = False
        self._ask(max(self._next_emit, n + 1))
        return batch

    def checkpoint(
        self, *, content_type: str | None = None, email: str | None = None
    ) -> WalkCheckpoint:
        """Where the walk stands after the last batch released."""
        return WalkCheckpoint(
            next_page=self._anchor_page if self._anchor else self._delivered + 1,
            page_size=self.size,
            size_proven=self.size_proven,
            content_type=content_type,
            email=email,
            since=self.since,
            anchor_ids=list(self._anchor),
            recent_ids=self._seen.ids(),
            works=self._yielded,
            finished=self.finished,
        )

    # -- requests -----------------------------------------------------------------------

    def _emit(self, page_num: int, size: int, *, probe: bool = False) -> _Slot[P]:
        self._seq += 1
        self._next_id += 1
        req = PlanRequest(self._next_id, page_num, size, probe)
        slot: _Slot[P] = _Slot(req, self._seq, self._epoch)
        slot.wave = self._received
        alone = True
        for other in self._by_id.values():
            if other.answer is None and not other.failed:
                other.solo = alone = False
        slot.solo = alone
        self._by_id[req.id] = slot
        self._log.append(slot.mark)
        self._out.append(req)
        if probe:
            self.stats.probes += 1
        else:
            self._page_requests += 1
        if probe or (page_num == 1 and self._probe is None):
            # Page 1 shows the head too: it serves as a probe when none is in flight.
            self._probe = slot
            # Everything received so far was served before it.
            slot.covers, self._need_hi = self._need_hi, []
        return slot

    def _ask(self, page_num: int, *, refetch: bool = False) -> _Slot[P]:
        """Send page ``page_num`` at the page size, as the request for that page (``refetch``:
        a page asked again; so is the one a drift or rewind marked)."""
        slot = self._emit(page_num, self.size)
        slot.refetch = refetch or page_num == self._refetch_page
        self._pages[page_num] = slot
        self._next_emit = page_num + 1
        return slot

    def _probe_answered(self, slot: _Slot[P], answer: Answer[P]) -> None:
        head = answer.head
        if self._epoch is None:
            self._epoch = 0
        elif head != self._head:
            self._epoch += 1
        self._head = head
        slot.lo = slot.hi = self._epoch
        for covered in slot.covers:
            covered.hi = self._epoch
        slot.covers = []
        self._probe = None
        if self._repipeline:
            self._repipeline = False
            self._pipelined = True

    def _cancel(self, slot: _Slot[P]) -> None:
        if self._by_id.pop(slot.req.id, None) is not None and slot.answer is None:
            self._cancels.append(slot.req.id)
            # Gone: served no later than now, if at all.
            slot.recv_seq = slot.mark.recv = self._seq
        if self._pages.get(slot.req.page_num) is slot:
            del self._pages[slot.req.page_num]
        if slot is self._probe:
            self._probe = None

    def _cancel_pages(self, from_page: int) -> None:
        for page_num in [p for p in self._pages if p >= from_page]:
            slot = self._pages[page_num]
            if slot is not self._probe:  # a page 1 serving as probe finishes its job
                self._cancel(slot)
            else:
                del self._pages[page_num]
        self._need_hi = [s for s in self._need_hi if s.req.id in self._by_id]

    def _cancel_all(self) -> None:
        for slot in list(self._by_id.values()):
            self._cancel(slot)
        self._peek = 0
        self._pages.clear()
        self._need_hi = []
        self._probe = None

    def _pipelining(self) -> bool:
        return (
            self._pipelined
            and self.prefetch > 0
            and self.size_proven
            and self._epoch is not None
            and not self._searching
            and self._check is None
        )

    def _at_max_pages(self) -> bool:
        return self.max_pages is not None and self._page_requests >= self.max_pages

    def _depth(self, pipelining: bool | None = None) -> int:
        """Page requests to keep in flight now (``pipelining``: :meth:`_pipelining`, if known)."""
        if pipelining is None:
            pipelining = self._pipelining()
        depth = 1 + (self.prefetch if pipelining else 0)
        if self.max_items is not None:
            remaining = max(0, self.max_items - self._yielded)
            depth = min(depth, -(-remaining // self.size))
        return depth

    def _pump(self) -> None:
        """Send what the state calls for: pages to fill the pipeline, and head probes."""
        if self.finished or self.failed_request is not None:
            return
        if self._check is not None:
            self._pump_check()
            return
        solo = self._solo_slot
        if solo is not None:
            if solo.answer is None and not solo.failed and solo.req.id in self._by_id:
                return  # nothing else goes out while it is in flight
            self._solo_slot = None
        if self._solo:
            if self._by_id or self._probe is not None or self._at_max_pages():
                return
            self._solo = False
            self._solo_slot = self._ask(max(self._next_emit, self._delivered + 1), refetch=True)
            return
        pipelining = self._pipelining()
        depth = self._depth(pipelining)
        in_flight = 0
        end_at: int | None = None
        for p, s in self._pages.items():
            if s.answer is None:
                in_flight += not s.failed
            elif s.answer.n_entries == 0 and (end_at is None or p < end_at):
                end_at = p
        buffered = len(self._pages) - in_flight
        # Pipelined, pages received wait in a buffer for their proof while more go out; one
        # page at a time, the next is asked only once the last is handed out.
        room = depth
        # The page to hand out next, and what would become of it: decided once, as nothing
        # sent here changes that (its proofs count requests received before it was).
        nxt = self._pages.get(self._delivered + 1)
        verdict = self._decide(nxt) if nxt is not None and nxt.answer is not None else None
        if pipelining and nxt is not None and verdict is not None:
            if verdict in ("reject", "lost"):
                room = 0  # the walk is about to go back: nothing more now
            elif verdict == "wait" and self._probation_wait(depth, nxt):
                # On probation, the probe for the round goes out before the next round:
                # the fewer requests between the head probes, the likelier they agree.
                room = 0
        sends: list[int] = []
        page_num = max(self._next_emit, self._delivered + 1)
        while in_flight + len(sends) < room and (
            buffered < 4 * depth if pipelining else not buffered
        ):
            if self.max_pages is not None and self._page_requests + len(sends) >= self.max_pages:
                break
            if page_num in self._pages or (end_at is not None and page_num > end_at):
                break
            sends.append(page_num)
            page_num += 1
        if (
            pipelining
            and sends
            and self._probe is None
            and not self._repipeline
            and self._delivered >= self._solo_until
            and self._probe_due(depth, in_flight + len(sends), buffered, nxt, verdict)
        ):
            # The probe for the pages received goes out before the pages that follow them:
            # a server taking requests in order then serves it before them, and the fewer
            # requests between the head probes, the likelier they show the same head.
            self._emit(1, 1, probe=True)
        for page_num in sends:
            self._ask(page_num)
            in_flight += 1
        if self._probe is not None:
            return
        if self._delivered < self._solo_until:
            # Pages asked one right after the other: nothing in between, unless waiting on
            # a probe is all that is left.
            if in_flight or verdict != "wait":
                return
            self._emit(1, 1, probe=True)
            return
        if self._repipeline or self._probe_due(depth, in_flight, buffered, nxt, verdict):
            self._emit(1, 1, probe=True)

    def _round_in_flight(self, nxt: _Slot[P]) -> bool:
        """Pages sent with ``nxt`` (in the same wave or before) are still in flight."""
        return any(
            s.answer is None and not s.failed and s.wave <= nxt.wave for s in self._pages.values()
        )

    def _probation_wait(self, depth: int, nxt: _Slot[P]) -> bool:
        """On probation (pipelining just began), pages sent with ``nxt`` still in flight."""
        return self._pipelined_run < 2 * depth and self._round_in_flight(nxt)

    def _probe_due(
        self,
        depth: int,
        in_flight: int,
        buffered: int,
        nxt: _Slot[P] | None,
        verdict: str | None,
    ) -> bool:
        """Whether a head probe should go out now (none in flight); ``nxt`` is the page to
        hand out next, ``verdict`` what :meth:`_decide` says of it (None: not answered)."""
        if not self._need_hi:
            return False
        # One probe answers for every page received before it was sent: send one when
        # enough are waiting, or when waiting is all that is left to do.
        if nxt is None or nxt.answer is None or verdict != "wait":
            return False  # not blocked
        # On probation (pipelining just began), fail fast if works arrive, but wait for
        # the pages sent with the blocked one: one probe then vouches for them all.
        probation = self._pipelined_run < 2 * depth and not self._round_in_flight(nxt)
        return (
            len(self._need_hi) >= 2 * depth
            or probation
            or in_flight == 0
            or buffered >= 3 * depth
            or not self._pipelining()
            or nxt.answer.n_entries == 0
        )

    # -- handing pages out --------------------------------------------------------------

    def _overlaps(self, answer: Answer[P]) -> bool:
        if not self._last_ids:
            return False
        return not self._last_set.isdisjoint(answer.id_set)

    def _progress(self, answer: Answer[P], slot: _Slot[P], overlaps: bool) -> bool:
        """Whether a page reaches further down the list than the page before (``overlaps``:
        it holds a work of that page).

        It does if it holds that page's last work followed by more, or nothing of that page
        (the next stretch down, when nothing arrived in between: see :meth:`_adjacent`).
        """
        last_ids = self._last_ids
        if not last_ids:
            return True
        if not overlaps:
            return self._adjacent(slot)
        tail, ids = last_ids[-1], answer.ids
        if tail in answer.id_set:
            return ids.index(tail) < len(ids) - 1
        return False

    def _verdict(self, slot: _Slot[P]) -> str:
        """``accept``, ``wait`` or ``reject`` the next page: was it served after the last?"""
        last = self._last
        if last is None:
            return "accept"  # the first page of the walk (or of a search)
        if slot.emit_seq > last.recv_seq:
            return "accept"  # asked after the page above was received
        assert slot.answer is not None
        if slot.answer.n_entries and self._overlaps(slot.answer):
            return "accept"  # holds a work of the page above, so it was served after it
        if slot.lo is None:
            return "reject"  # sent before any probe was answered: nothing can vouch for it
        if self._arriving():
            # Works were arriving a moment ago: a probe would most likely say so. Ask again
            # now rather than a round trip later.
            return "reject"
        if last.hi is None:
            return "wait"
        if last.hi <= slot.lo:
            return "accept"  # no work arrived between the head probes around the two pages
        return "reject"

    def _arriving(self) -> bool:
        """Works were seen arriving a moment ago."""
        return self._delivered - self._arrivals_seen <= 2 * (self.prefetch + 1)

    def _advance(self) -> tuple[bool, Batch[P] | None]:
        """Try to hand out the next page: (whether anything changed, the batch if any)."""
        if self._check is not None:
            return self._advance_check(), None
        n = self._delivered + 1
        slot = self._pages.get(n)
        if slot is None:
            return False, None
        if slot.failed:
            self.failed_request = slot.req.id
            return True, None
        if slot.answer is None:
            return False, None
        verdict = self._decide(slot)
        if verdict == "wait":
            return False, None
        if verdict == "reject":
            self._drift(n)
            return True, None
        if verdict == "lost":
            self._search_from_anchor()
            return True, None
        return True, self._deliver(n, slot)

    def _decide(self, slot: _Slot[P]) -> str:
        verdict = self._verdict(slot)
        return self._placement(slot) if verdict == "accept" else verdict

    def _placement(self, slot: _Slot[P]) -> str:
        """Where a page served after the last one lies against the walk's place.

        A page holding the last work handed out goes on from it; one holding works seen
        before but not that one lies above it (works arrived), and the walk reads on down
        without yielding until it shows up. A page of works all new is the next stretch
        only if nothing arrived since the page before was served: proved when the two were
        asked one after the other with nothing else in flight (then fewer than a page of
        works can have arrived, and any would have repeated the last work here), or when
        head probes around both show the same head. Otherwise the walk goes back to where
        its place was last seen and reads down to it (``lost``).
        """
        anchor = self._anchor
        last = self._last
        answer = slot.answer
        assert answer is not None
        if self._searching or not anchor or last is None or not answer.ids:
            return "accept"
        if anchor[-1] in answer.id_set or self._seen.any_of(answer.id_set):
            return "accept"
        if self._adjacent(slot) or self._bounded(slot):
            return "accept"
        if last.lo is not None and slot.hi is None and not self._arriving():
            return "wait"  # the next head probe may show that nothing arrived
        return "lost"

    @staticmethod
    def _tight(slot: _Slot[P], last: _Slot[P]) -> bool:
        """Asked right after the page above was received, each alone: at most one request's
        arrivals between the two."""
        return slot.solo and last.solo and slot.emit_seq == last.recv_seq + 1

    def _adjacent(self, slot: _Slot[P]) -> bool:
        """Nothing (or at most one request's arrivals) came between the page above and this
        one: asked tight, or head probes around both saw the same head."""
        last = self._last
        if last is None:
            return True
        if self._tight(slot, last):
            return True
        return last.lo is not None and slot.hi is not None and last.lo == slot.hi

    def _bounded(self, slot: _Slot[P]) -> bool:
        """At most 3 other requests may have been served between the page above and this
        page of works all new (served after it): it is the next stretch.

        Had k works arrived in between (0 < k < two pages), the page would hold a work of
        the page above. Below half a page of arrivals per request, the 4 requests (this
        one included) bring fewer than two pages. (Faster arrivals may make it a page of
        works that arrived, above the place: the walk then finds its place further down,
        or stops with WalkStalledError, never losing a work.)
        """
        last = self._last
        assert last is not None
        if not self.size_proven:
            return False
        return self._few_between(last, slot, 3)

    def _few_between(self, last: _Slot[P], slot: _Slot[P], most: int) -> bool:
        """At most ``most`` requests may have been served after ``last`` and before ``slot``
        (sent before ``slot`` was received, and received after ``last`` was sent or not at
        all). False when the log no longer reaches back far enough to tell."""
        log = self._log
        if len(log) == log.maxlen and log[0].emit >= last.emit_seq:
            return False
        lo, hi = last.emit_seq, slot.recv_seq
        ends = (last.req.id, slot.req.id)
        count = 0
        for other in reversed(log):
            if other.emit > hi or other.rid in ends:
                continue
            if other.recv == 0 or other.recv > lo:
                count += 1
                if count > most:
                    return False
        return True

    def _rewind(self, page_num: int) -> None:
        """Ask again from ``page_num`` (handed out already), one page at a time, alone."""
        self.stats.refetches += 1
        self._stale += 1
        if self._stale >= self.max_stale_pages:
            raise WalkStalledError(page_num + 1, self._stale)
        self._cancel_all()
        self._delivered = page_num - 1
        self._next_emit = self._refetch_page = page_num
        self._solo = True
        self._solo_until = page_num + 1
        self._stop_pipelining()

    def _search_from_anchor(self) -> None:
        """Read again from the page where the walk's place was last seen, down to it.

        The page after it first: works arriving push the place down onto it, and then the
        page where it was is not needed. Only if that page holds no work seen before (it may
        lie right below the place, or be a page of arrivals) is the page of the place read.
        """
        self.stats.refetches += 1
        log.debug(
            "page %d may be a page of arrivals: finding the walk's place again", self._delivered + 1
        )
        self._cancel_all()
        if self._anchor and self._anchor_page == self._delivered:
            self._peek = self._anchor_page + 1
        else:
            self._delivered = self._anchor_page - 1
        self._next_emit = self._delivered + 1
        self._searching = True
        self._search_set = frozenset(self._anchor)
        self._last = None
        self._last_ids, self._last_set = (), frozenset()
        self._solo = True
        self._stop_pipelining()

    def _drift(self, n: int) -> None:
        """Works arrived while page ``n`` was in flight with the page above: ask it again."""
        self._arrivals_seen = self._delivered
        self.stats.drift_events += 1
        self.stats.refetches += 1
        log.debug("page %d may hide works (answered out of order): asking it again", n)
        self._cancel_pages(n)
        self._next_emit = self._refetch_page = n
        self._stop_pipelining()

    def _stop_pipelining(self) -> None:
        """One page at a time for a calm stretch (longer after each pipelining cut short)."""
        self._fallback = True
        if self._pipelined:
            self._pipelined = False
            self._calm = 0
            if self._pipelined_run < 8 * CALM_PAGES:
                self._calm_needed = min(2 * self._calm_needed, MAX_CALM_PAGES)
                # Cut short: works are arriving. Count it as evidence of the rate, so that
                # pipelining comes back only after a long quiet stretch.
                self._arrival_rate = max(self._arrival_rate, 0.5)
        self._pipelined_run = 0

    def _deliver(self, n: int, slot: _Slot[P]) -> Batch[P] | None:
        answer = slot.answer
        assert answer is not None
        del self._pages[n]
        self._by_id.pop(slot.req.id, None)
        ids = answer.ids
        entries = answer.n_entries
        seen = self._seen
        if self._peek == n:
            self._peek = 0
            if not entries or not (seen.any_of(ids) or not self._search_set.isdisjoint(ids)):
                # Nothing here says where it lies against the place: read from the page the
                # place was on.
                self.stats.refetches += 1
                self._delivered = self._anchor_page - 1
                self._next_emit = self._anchor_page
                self._solo = True
                return None

        if self._short is not None and self._short[0] == n - 1:
            short_page, short_entries = self._short
            self._short = None
            if entries == 0 or list(ids) == list(self._last_ids):
                if short_page == 1 and not self._confirming:
                    # A short first page, then nothing: the end, or a server that caps the
                    # page size and counts offsets by the size asked (the rest of each page
                    # is never served). The next page at the size served tells them apart.
                    self._resize(short_entries, short_page, confirm=True)
                    return None
            elif any(i not in seen for i in ids):
                self._resize(short_entries, short_page, confirm=False)
                return None
            elif self._searching:
                # Searching, works seen before are no evidence of drift: a short page with
                # more after it may be a capped one. Read on at the size served.
                self._resize(short_entries, short_page, confirm=True)
                return None
        if self._confirming:
            # Page 2 at the size page 1 was served with: new works after the last work of
            # page 1 (or only new works) are the rest of a capped page 1; page 1 again is
            # a server repeating the last page past the end.
            self._confirming = False
            if ids and list(ids) == list(self._last_ids):
                self._repeated(n)
                return None
            tail = list(ids)
            if self._last_ids and self._last_ids[-1] in tail:
                tail = tail[tail.index(self._last_ids[-1]) + 1 :]
            elif any(i in seen for i in tail):
                tail = []
            if any(i not in seen for i in tail):
                self._cap_found(self._last_entries)
        if entries == 0:
            self._at_end(n)
            return None
        if (
            self._last is not None
            and self._last.req.page_num == n - 1
            and n != self._checked
            and ids
            and self._last_ids
            and ids[0] == self._last_ids[0]
            and list(ids) == list(self._last_ids)
        ):
            last = self._last
            tight = self._tight(slot, last)
            if not tight and self._last_entries >= self.size and n > 2:
                # Other requests were served between the two: exactly a page of works may
                # have arrived. Ask both again, one right after the other, alone.
                self._rewind(n - 1)
                return None
            self._repeated(n)
            return None

        self.stats.pages += 1
        if n == 1 and self._last is None:
            self._first_full = entries >= self.size
        if entries >= self.size:
            self.size_proven = True
        elif not self.size_proven and n == self._first_page:
            self._short = (n, entries)

        keep: Sequence[int]
        start = 0
        found = False
        anchor = self._anchor
        id_set = answer.id_set
        known = seen.any_of(id_set)  # any work of the page seen before
        if known and not self._searching and anchor and anchor[-1] not in id_set:
            # The page lies wholly above the last work handed out (works arrived and
            # pushed it down): everything above that work was handed out or arrived
            # since, so read on without yielding until it shows up again, one page at a
            # time (the pages in flight were pushed up too).
            self._searching = True
            self._search_set = frozenset(anchor)
            self._cancel_pages(n + 1)
            self._next_emit = n + 1
            self._stop_pipelining()
        if self._searching:
            search = self._search_set
            found_at = -1
            for i, wid in enumerate(ids):
                if wid in search:
                    found_at = i
            # The anchor ids are consecutive in the list, the place after the last of them:
            # it is here if the page holds that one, or anything after another of them.
            if found_at >= 0 and (ids[found_at] == anchor[-1] or found_at < len(ids) - 1):
                # Everything after the last work handed out is new to this walk.
                self._searching = self._resumed_search = False
                found = True
                start = found_at + 1
                log.debug("the walk found its place again on page %d", n)
            else:
                start = len(ids)  # works above the place: handed out before, or arrivals
        fresh = len(id_set) == len(ids) and not known
        if fresh:
            keep = range(start, len(ids))  # the usual page: nothing seen, no repeat
        else:
            on_page: set[int] = set()
            kept: list[int] = []
            for i in range(start, len(ids)):
                wid = ids[i]
                if wid in seen or wid in on_page:
                    continue
                on_page.add(wid)
                kept.append(i)
            keep = kept
            self.stats.duplicates += len(ids) - start - len(keep)
        if start:
            # Works above the place: those handed out stay remembered; the others (works
            # that arrived) are not taken for handed out, should the place be above them.
            seen.touch(ids[:start])
            seen.add(ids[start:])
        else:
            seen.add(id_set, new=not known)

        if self.since is not None and answer.times is not None and keep:
            times = answer.times
            since = self.since
            old = {i for i in keep if (t := times[i]) is not None and t <= since}
            if old:
                keep = [i for i in keep if i not in old]
                self.finished = True
        if self.max_items is not None and len(keep) >= self.max_items - self._yielded:
            keep = keep[: max(0, self.max_items - self._yielded)]
            self.finished = True

        # Runaway guard: pages that bring nothing new and reach no further down the list
        # than the page before (a page that shrinks towards the end is progress too).
        overlaps = self._overlaps(answer)
        progress = self._progress(answer, slot, overlaps)
        if self._last is not None and overlaps:
            self._arrivals_seen = n  # works arrived between this page and the one before
        if found or progress:
            self._stale = self._loose = 0
            self._tail = self.size
        elif entries < self._tail:
            # A page shorter than any since the last progress: the tail, re-served on ever
            # shorter pages as works arrive (it can shrink only so often).
            self._stale = 0
            self._tail = entries
        elif slot.refetch:
            pass  # a page asked again is expected to hold what was seen: the ask counted
        elif self._last is not None and not self._tight(slot, self._last):
            # Other requests (and their arrivals) came between the two: no verdict yet. Go
            # on one page at a time, where a page that brings nothing means something.
            self._loose += 1
            if self._loose >= self.max_stale_pages:
                self._loose = 0
                self._stop_pipelining()
                self._solo_until = n + self.max_stale_pages + 1
        else:
            self._stale += 1
            if self._stale >= self.max_stale_pages:
                raise WalkStalledError(n, self._stale)

        # The walk's place (the last work handed out, the anchor) moves to this page: it holds
        # the anchor, or nothing seen before (the stretch after it).
        if not self._searching and ids:
            end = keep[-1] + 1 if (self.finished and keep) else len(ids)
            self._anchor = ids[:end] if end < len(ids) else ids  # answers are never changed
            self._anchor_page = n

        if self._pipelining():
            self._pipelined_run += 1
            if self._pipelined_run >= 8 * CALM_PAGES:
                self._calm_needed = CALM_PAGES
        elif self.prefetch and not self._pipelined and not self._repipeline:
            # Calm means no work arriving: a page holding works of the one before breaks it.
            # One page at a time, that tells how often works arrive (per request, about):
            # pipelining pays only if a round of pages in flight is likely to see none.
            arrived = self._arrivals_seen == n
            self._arrival_rate += 0.05 * (arrived - self._arrival_rate)
            self._calm = 0 if arrived else self._calm + 1
            quiet = self._arrival_rate < 1 / (4 * (self.prefetch + 1))
            if self._calm >= self._calm_needed and quiet:
                # A fresh probe first, so that the pages sent next can be vouched for.
                self._calm = 0
                self._repipeline = True
                self._fallback = False

        return self._hand_out(n, slot, keep)

    def _hand_out(self, n: int, slot: _Slot[P], keep: Sequence[int]) -> Batch[P]:
        """Page ``n`` (its answer in ``slot``) becomes the last page handed out, ``keep`` the
        works of it to yield."""
        answer = slot.answer
        assert answer is not None
        self._delivered = n
        self._last = slot
        self._last_ids, self._last_set = answer.ids, answer.id_set
        self._last_entries = answer.n_entries
        self._need_hi = [s for s in self._need_hi if s is slot or s.req.page_num > n]
        self._yielded += len(keep)
        self.stats.works = self._yielded
        if self.finished:
            self._cancel_all()
        return Batch(n, answer.payload, keep)

    def _at_end(self, n: int) -> None:
        """Page ``n`` is past the end (empty, or the last page served again)."""
        if self._searching:
            if self._resumed_search:
                raise ResumeError(
                    f"the resumed walk reached the end (page {n}) without finding where its "
                    "checkpoint left off: the works it ended on were deleted; start a new walk"
                )
            # Lost in works arriving faster than it reads (or works deleted under it).
            raise WalkStalledError(n, self._stale + 1)
        self.stats.pages += 1
        self.finished = True
        self._cancel_all()

    def _cap_found(self, entries: int) -> None:
        self.stats.page_size_caps += 1
        log.warning(
            "the server serves at most %d entries per page: going on with pageSize=%d",
            entries,
            entries,
        )

    def _resize(self, entries: int, short_page: int, *, confirm: bool) -> None:
        """Go on at the page size the server serves, from where the walk's place is."""
        self._cancel_all()
        self.size = self.stats.page_size = entries
        self.size_proven = False
        self._tail = entries
        if short_page == 1:
            # Page 1 is the same at either size: carry on with page 2 at the size served.
            self._confirming = confirm
            if not confirm:
                self._cap_found(entries)
            self._next_emit = 2
        else:
            # Page N of the old size sits further down at the new size if the server counts
            # offsets by the size asked: search for the walk's place from the earliest.
            self._cap_found(entries)
            self._delivered = short_page - 1
            self._next_emit = self._first_page = short_page
            self._last = None
            self._last_ids, self._last_set = (), frozenset()
            if self._anchor:
                self._searching = True
                self._search_set = frozenset(self._anchor)
        self._pump()

    # -- a full page served again for the next page --------------------------------------

    def _repeated(self, n: int) -> None:
        """Page ``n`` holds exactly the works of page ``n - 1``."""
        if n <= 1:  # nothing above to compare with (a walk read back to page 1)
            self._at_end(n)
            return
        if self._last_entries < self.size and self.size_proven:
            # A short page served again: the list ends there whatever else happened (unless
            # the server caps the page size: then it is checked like a full page).
            self._at_end(n)
            return
        # The end (a proxy repeating the last page; or, for page 2, a server ignoring
        # pageNum), or exactly a page of works arrived in between. Ask both pages again
        # between two head probes to tell. Works arriving all the time keep it from ever
        # telling: that counts towards a stall.
        self._stale += 1
        if self._stale >= self.max_stale_pages:
            raise WalkStalledError(n, self._stale)
        self._cancel_pages(n)
        self._check = _Check(n)
        self._pump_check()

    def _pump_check(self) -> None:
        check = self._check
        assert check is not None
        if check.above is None:
            if self.max_pages is not None and self._page_requests + 2 > self.max_pages:
                # No room left to tell: the walk stops here, as max_pages says.
                self._check = None
                self._cancel_all()
                return
            if self._epoch is None:
                if self._probe is None:
                    self._emit(1, 1, probe=True)
                return
            check.above = self._emit(check.page_num - 1, self.size)
            check.again = self._emit(check.page_num, self.size)
            check.above.refetch = check.again.refetch = True
            self.stats.refetches += 2
            return
        again = check.again
        assert again is not None
        if (
            self._probe is None
            and check.above.answer is not None
            and again.answer is not None
            and again in self._need_hi
        ):
            self._emit(1, 1, probe=True)

    def _advance_check(self) -> bool:
        check = self._check
        assert check is not None
        above, again = check.above, check.again
        if above is None or again is None:
            return False
        for s in (above, again):
            if s.failed:
                self.failed_request = s.req.id
                return True
        if above.answer is None or again.answer is None or again.hi is None or above.hi is None:
            return False
        self._by_id.pop(above.req.id, None)
        self._check = None
        one_list = above.lo == again.lo == above.hi == again.hi
        if one_list and list(above.answer.ids) == list(again.answer.ids):
            # Both pages from one list: page n is not what lies at its offset.
            if check.page_num == 2 and len(above.answer.ids) and self._first_full:
                # A full first page served again for page 2: a server that ignores pageNum
                # (or repeats a last page that is also the first: it cannot say which).
                raise WalkStalledError(2, self._stale + 1)
            # A server that repeats the last page past the end: the list ends there.
            self._at_end(check.page_num)
            return True
        # Works arrived in between (or the pages differ): ask both again, one right after
        # the other (a stall if works keep arriving a page at a time).
        if list(above.answer.ids) != list(again.answer.ids):
            self._checked = check.page_num
            self._pages[check.page_num] = again
            self._next_emit = check.page_num + 1
            return True
        self._rewind(check.page_num - 1)
        return True


class AutoPrefetch:
    """Picks a walk's prefetch depth from what it observes (``prefetch="auto"``); no I/O.

    Latency it cannot hide (answers faster than ``min_latency``) means no prefetch: deeper only
    adds work. Otherwise it goes straight to ``max_prefetch`` while no request has had to be
    retried; a retried request (a 429, a 5xx, a network failure) halves the depth and sets a
    threshold at the new depth, and from there it grows like a TCP window: doubling every
    round of answers up to the threshold, then by one per round. It never exceeds
    ``max_prefetch``, so an account at capacity never sees its load multiplied.

    Args:
        max_prefetch: The deepest it goes.
        min_latency: Seconds per request below which prefetch cannot pay.
    """

    __slots__ = ("_clean", "_ewma", "depth", "max_prefetch", "min_latency", "threshold")

    def __init__(self, max_prefetch: int = 8, min_latency: float = 0.01) -> None:
        self.max_prefetch = max_prefetch
        self.min_latency = min_latency
        self.depth = 0
        self.threshold = max_prefetch
        self._ewma: float | None = None
        self._clean = 0

    def observe(self, seconds: float, retried: bool) -> int:
        """One answer: how long its request took, and whether a retry happened meanwhile.
        Returns the depth to use from now on."""
        if retried:
            self.threshold = max(1, self.depth // 2)
            self.depth //= 2
            self._clean = 0
            return self.depth
        ewma = self._ewma
        self._ewma = seconds if ewma is None else 0.7 * ewma + 0.3 * seconds
        if self._ewma < self.min_latency:
            self.depth = 0
            self._clean = 0
            return self.depth
        if self.depth == 0 and self.threshold == self.max_prefetch:
            # Latency to hide and no sign of a busy account yet: straight to the threshold.
            self.depth = self.max_prefetch
            return self.depth
        self._clean += 1
        if self._clean >= self.depth + 1:  # a round of answers at this depth
            self._clean = 0
            grown = max(1, 2 * self.depth) if self.depth < self.threshold else self.depth + 1
            self.depth = min(self.max_prefetch, grown)
        return self.depth
