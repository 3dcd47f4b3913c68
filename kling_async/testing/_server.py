"""The fake useapi.net Kling assets API and its fake CDN, as two aiohttp apps on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import re
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from ._library import (
    CONTENT_TYPES,
    FILE_TYPES,
    OFFSET_MODES,
    PAST_END_MODES,
    FakeLibrary,
    default_id_base,
)

__all__ = ["CLOCK_MODES", "FAULT_KINDS", "FakeKlingServer", "FakeStats", "Faults"]

CLOCK_MODES: Final = (
    "library",
    "honest",
    "absent",
    "constant",
    "coarse",
    "backwards",
    "skewed",
)
"""How the server stamps ``currentTimestamp`` (undocumented: a client must not rely on it):
``"library"`` a minute after the newest work, ``"honest"`` the wall clock in ms,
``"absent"`` no field, ``"constant"`` the same value always, ``"coarse"`` the wall clock
rounded down to the second, ``"backwards"`` earlier with every request, ``"skewed"`` two
backends taking turns, one 5 s ahead."""

FAULT_KINDS: Final = (
    "429",
    "429_body",
    "500",
    "502",
    "503",
    "504",
    "drop",
    "slow",
    "broken_json",
)
"""Every fault the server can inject into an assets request."""

_API_PREFIX: Final = "/v1/kling"
_INT: Final = re.compile(r"[0-9]+")
_FILE_NAME: Final = re.compile(r"([0-9]+)\.(mp4|png|mp3|wav)")
_MIME: Final = {
    "mp4": "video/mp4",
    "png": "image/png",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "zip": "application/zip",
}
_ALL_FILE_TYPES: Final = frozenset(ft for fts in FILE_TYPES.values() for ft in fts)
_HTML_502: Final = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_HTML_504: Final = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_CAPACITY: Final = "All configured Kling accounts are currently at maximum capacity"
_NO_CONFIGURATION: Final = "Configuration not found. To create configuration use POST /accounts."


@dataclass
class Faults:
    """Which failures the fake server injects into ``GET /assets/`` requests.

    Every choice is deterministic: a ``random.Random`` seeded with ``seed`` (the server's seed
    when None) draws once per assets request, and the draws restart whenever a new ``Faults``
    is assigned to ``server.faults``.

    Fault kinds (see ``FAULT_KINDS``): ``"429"`` (JSON body, ``Retry-After`` header),
    ``"429_body"`` (``{"error": ..., "retryAfter": N}`` and no header), ``"500"`` and ``"503"``
    (JSON bodies), ``"502"`` and ``"504"`` (HTML bodies, as a proxy sends them), ``"drop"``
    (headers, then half the body, then the connection closes), ``"slow"`` (sleeps
    ``slow_seconds`` before answering), ``"broken_json"`` (a 200 whose JSON is truncated).

    Attributes:
        rate: fraction (0..1) of assets requests that get a fault drawn from ``kinds``.
        kinds: the fault kinds ``rate`` draws from.
        at: faults by 1-based assets request number (counted since start or
            ``reset_stats()``); wins over ``rate``.
        retry_after: the ``Retry-After`` header value of a ``"429"``; its number is also the
            ``retryAfter`` of a ``"429_body"``.
        omit_retry_after: send ``"429"`` without a ``Retry-After`` header.
        slow_seconds: how long a ``"slow"`` fault sleeps.
        inserts_per_request: tasks inserted at the head before serving each assets request
            (fractions accumulate: 0.5 inserts one task every other request).
        seed: seed of the fault draws; None uses the server's seed.
        email: only the assets requests of this account (its ``email`` parameter, case
            aside) get faults; None: every account's.
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "500", "502", "503", "504")
    at: Mapping[int, str] = field(default_factory=dict)
    retry_after: str = "0"
    omit_retry_after: bool = False
    slow_seconds: float = 5.0
    inserts_per_request: float = 0.0
    seed: int | None = None
    email: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {self.rate}")
        if self.inserts_per_request < 0:
            raise ValueError("inserts_per_request must be >= 0")
        self.kinds = tuple(self.kinds)
        for kind in (*self.kinds, *self.at.values()):
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; use one of {FAULT_KINDS}")
        if self.rate and not self.kinds:
            raise ValueError("rate > 0 needs at least one kind")


@dataclass
class FakeStats:
    """What the fake server has seen since it started or since :meth:`reset`.

    Attributes:
        requests: ``GET /assets/`` requests received (faulty ones included).
        pages: ``pageNum`` of each assets request, in arrival order (valid ones only).
        page_sizes: ``pageSize`` of the same requests (40 when not given, 0 when invalid).
        statuses: complete API responses (assets and download) by status code; a ``"drop"``
            is not a complete response.
        faults: faults served, by kind.
        downloads: ``GET /assets/download`` requests received.
        cdn_requests: requests to the fake CDN.
        cdn_auth_requests: CDN requests that carried an ``Authorization`` header (a leak:
            the useapi token must never go to the CDN).
        in_flight: assets requests being handled right now.
        max_in_flight: the most assets requests handled at once.
        last_headers: headers of the last assets request (case-insensitive), or None.
        accounts_requests: ``GET /accounts`` requests received.
        api_times: ``time.monotonic()`` at the arrival of each API request (assets, download,
            accounts), in order: to check a client's pace from the server's side.
    """

    requests: int = 0
    pages: list[int] = field(default_factory=list)
    page_sizes: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    downloads: int = 0
    cdn_requests: int = 0
    cdn_auth_requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    last_headers: CIMultiDict[str] | None = None
    accounts_requests: int = 0
    api_times: list[float] = field(default_factory=list)

    def reset(self) -> None:
        """Zero every counter (``in_flight`` keeps counting requests still in progress)."""
        self.requests = 0
        self.pages = []
        self.page_sizes = []
        self.statuses = Counter()
        self.faults = Counter()
        self.downloads = 0
        self.cdn_requests = 0
        self.cdn_auth_requests = 0
        self.max_in_flight = self.in_flight
        self.last_headers = None
        self.accounts_requests = 0
        self.api_times = []


class _BadRequest(Exception):
    """Invalid parameters: answered 400 ``{"error": "Invalid parameters"}``."""


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _positive_int(value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    if not _INT.fullmatch(value) or int(value) < 1:
        raise _BadRequest
    return int(value)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class FakeKlingServer:
    """A faithful fake of useapi.net's Kling assets API, for tests and benchmarks.

    Serves ``GET /v1/kling/assets/``, ``GET /v1/kling/assets/download`` and
    ``GET /v1/kling/accounts`` on one port and a
    fake Kling CDN (the ``cdnUrl`` targets) on a second port, over a lazily generated
    :class:`FakeLibrary` per account. Use it as ``async with`` (in the running loop), with
    explicit :meth:`start` / :meth:`close`, or as a plain ``with`` (in a background thread
    with its own event loop). The mutation methods are safe in every mode.

    Args:
        tasks: history entries (tasks) in each account's library.
        token: the bearer token the API accepts.
        seed: drives the libraries and the fault draws.
        emails: Kling account emails; each gets its own library and ``/accounts`` lists them.
            None: one account, the ``email`` parameter is ignored and ``/accounts`` answers
            404 in plain text, as useapi does when no account is configured. One email:
            ``email`` is optional but must match. Several: ``email`` is required (400
            without it).
        faults: faults to inject (adjustable later through ``server.faults``).
        latency: seconds to sleep before answering each assets request (``server.latency``).
        file_size: size in bytes of each file the CDN serves.
        non_ascii: fraction of prompts that are non-ASCII (see :class:`FakeLibrary`).
        host: interface to listen on.
        port: API port; 0 picks a free one.
        cdn_port: CDN port; 0 picks a free one.
        shutdown_timeout: seconds :meth:`close` waits for handlers still running.
        clock: how ``currentTimestamp`` is stamped, one of :data:`CLOCK_MODES`
            (``server.clock``).
        page_size_cap: serve at most this many history entries per page, whatever
            ``pageSize`` asks (``server.page_size_cap``; None: no cap).
        cap_offsets: with a cap, count offsets by the size ``"served"`` or ``"asked"``.
        past_end: a page past the end is ``"empty"`` (as documented) or ``"repeat"``s the
            last page, as a proxy might (``server.past_end``).

    Example:
        >>> async with FakeKlingServer(tasks=1000, token="test-token") as server:
        ...     url = server.base_url  # http://127.0.0.1:PORT/v1/kling
    """

    def __init__(
        self,
        tasks: int = 100,
        *,
        token: str = "test-token",
        seed: int = 0,
        emails: Sequence[str] | None = None,
        faults: Faults | None = None,
        latency: float = 0.0,
        file_size: int = 4096,
        non_ascii: float = 0.25,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        shutdown_timeout: float = 0.25,
        clock: str = "library",
        page_size_cap: int | None = None,
        cap_offsets: str = "served",
        past_end: str = "empty",
    ) -> None:
        if clock not in CLOCK_MODES:
            raise ValueError(f"unknown clock {clock!r}; use one of {CLOCK_MODES}")
        if page_size_cap is not None and page_size_cap < 1:
            raise ValueError(f"page_size_cap must be >= 1, got {page_size_cap}")
        if cap_offsets not in OFFSET_MODES:
            raise ValueError(f"cap_offsets must be one of {OFFSET_MODES}, got {cap_offsets!r}")
        if past_end not in PAST_END_MODES:
            raise ValueError(f"past_end must be one of {PAST_END_MODES}, got {past_end!r}")
        self.clock = clock
        self.page_size_cap = page_size_cap
        self.cap_offsets = cap_offsets
        self.past_end = past_end
        if isinstance(emails, str):
            raise TypeError("emails must be a sequence of strings, not a string")
        self.token = token
        self.seed = seed
        self.latency = latency
        self.file_size = file_size
        self.host = host
        self.port = port
        self.cdn_port = cdn_port
        self.shutdown_timeout = shutdown_timeout
        self.stats = FakeStats()
        self.emails: tuple[str, ...] = tuple(emails or ())
        self.libraries: dict[str, FakeLibrary] = {}
        """The library of each account, by lower-cased email ("" when no email is set)."""
        for i, email in enumerate(self.emails or ("",)):
            self.libraries[email.strip().lower()] = FakeLibrary(
                tasks,
                seed if i == 0 else seed * 7919 + i,
                non_ascii=non_ascii,
                id_base=default_id_base(seed, i),
            )
        self._faults = faults or Faults()
        self._rng = random.Random(self._fault_seed())
        self._insert_debt = 0.0
        self._runners: list[web.AppRunner] = []
        self._closing: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None
        self._thread_error: Exception | None = None

    # ------------------------------------------------------------------ configuration

    @property
    def faults(self) -> Faults:
        """The faults in force; assigning a new :class:`Faults` restarts its draws."""
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._faults = value
        self._rng = random.Random(self._fault_seed())
        self._insert_debt = 0.0

    def _fault_seed(self) -> int:
        return self.seed if self._faults.seed is None else self._faults.seed

    @property
    def library(self) -> FakeLibrary:
        """The first (or only) account's library."""
        return next(iter(self.libraries.values()))

    def library_for(self, email: str | None = None) -> FakeLibrary:
        """The library of the account with this email (None: the first account).

        Raises:
            KeyError: no account has this email.
        """
        if email is None:
            return self.library
        if not self.emails:
            raise KeyError(email)
        return self.libraries[email.strip().lower()]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1/kling``, for ``KlingSession(base_url=...)``."""
        self._require_started()
        return f"http://{_url_host(self.host)}:{self.port}{_API_PREFIX}"

    @property
    def cdn_url(self) -> str:
        """Root URL of the fake CDN (another origin than :attr:`base_url`)."""
        self._require_started()
        return f"http://{_url_host(self.host)}:{self.cdn_port}"

    def _require_started(self) -> None:
        if not self._runners:
            raise RuntimeError("FakeKlingServer is not started")

    # ------------------------------------------------------------------ mutations

    def insert_tasks(
        self,
        n: int,
        *,
        content_type: str | None = None,
        pending: bool = False,
        email: str | None = None,
    ) -> list[int]:
        """Insert ``n`` new tasks at the head of an account's library (offset drift).

        Args:
            n: number of tasks.
            content_type: ``video``, ``image``, ``audio`` or None for the usual mix.
            pending: give the new works an in-progress status (5).
            email: the account (None: the first).

        Returns:
            The new work ids.
        """
        return self.library_for(email).insert_tasks(n, content_type=content_type, pending=pending)

    def _owner(self, work_id: int) -> FakeLibrary:
        for library in self.libraries.values():
            if library.has_work(work_id):
                return library
        raise KeyError(work_id)

    def set_status(self, work_id: int, status: int) -> None:
        """Set a work's status, for example 99 to finish a pending work.

        Raises:
            KeyError: unknown work id.
        """
        self._owner(work_id).set_status(work_id, status)

    def complete_pending(self) -> list[int]:
        """Finish every work inserted with ``pending=True``; returns their ids."""
        return [wid for lib in self.libraries.values() for wid in lib.complete_pending()]

    def delete_works(self, work_ids: Iterable[int]) -> list[int]:
        """Delete works (a task goes when all its works are gone); later pages shift back.

        Raises:
            KeyError: an unknown work id (nothing is deleted then).
        """
        ids = list(work_ids)
        by_library: dict[int, tuple[FakeLibrary, list[int]]] = {}
        for wid in ids:
            library = self._owner(wid)
            by_library.setdefault(id(library), (library, []))[1].append(wid)
        for library, wids in by_library.values():
            library.delete_works(wids)
        return ids

    def delete_tasks(self, positions: Iterable[int], *, email: str | None = None) -> list[int]:
        """Delete tasks by position in the current listing (0 = newest); later pages shift back.

        Returns:
            The work ids of the deleted tasks.
        """
        return self.library_for(email).delete_tasks(positions)

    def reset_stats(self) -> None:
        """Same as ``server.stats.reset()``."""
        self.stats.reset()

    def file_bytes(self, work_id: int, file_type: str) -> bytes:
        """The bytes the CDN serves for ``<work_id>.<ext>`` (``file_type`` like ``"MP4"``)."""
        return FakeLibrary.file_bytes(work_id, file_type, self.file_size)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the API and the CDN on 127.0.0.1 (free ports unless given)."""
        if self._runners:
            raise RuntimeError("FakeKlingServer is already started")
        self._closing = asyncio.Event()
        api = web.Application()
        for path in ("/assets", "/assets/"):
            api.router.add_get(_API_PREFIX + path, self._handle_assets)
        for path in ("/assets/download", "/assets/download/"):
            api.router.add_get(_API_PREFIX + path, self._handle_download)
        for path in ("/accounts", "/accounts/"):
            api.router.add_get(_API_PREFIX + path, self._handle_accounts)
        cdn = web.Application()
        cdn.router.add_get("/files/{name}", self._handle_cdn_file)
        cdn.router.add_get("/zips/{name}", self._handle_cdn_zip)
        try:
            self.port = await self._serve(api, self.port)
            self.cdn_port = await self._serve(cdn, self.cdn_port)
        except BaseException:
            await self.close()
            raise

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self.shutdown_timeout
        )
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        bound: int = runner.addresses[0][1]
        return bound

    async def close(self) -> None:
        """Stop both servers; handlers still sleeping (latency, ``"slow"``) end at once."""
        if self._closing is not None:
            self._closing.set()
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    async def __aenter__(self) -> FakeKlingServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __enter__(self) -> FakeKlingServer:
        """Run the server in a background thread with its own event loop."""
        if self._runners or self._thread is not None:
            raise RuntimeError("FakeKlingServer is already started")
        ready = threading.Event()
        self._thread_error = None
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="FakeKlingServer", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._thread_error is not None:
            self._thread.join()
            self._thread = None
            raise self._thread_error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        thread, loop, stop = self._thread, self._thread_loop, self._thread_stop
        if thread is None or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = self._thread_loop = self._thread_stop = None

    def _thread_main(self, ready: threading.Event) -> None:
        asyncio.run(self._thread_serve(ready))

    async def _thread_serve(self, ready: threading.Event) -> None:
        self._thread_loop = asyncio.get_running_loop()
        self._thread_stop = asyncio.Event()
        try:
            await self.start()
        except Exception as exc:
            self._thread_error = exc
            ready.set()
            return
        ready.set()
        try:
            await self._thread_stop.wait()
        finally:
            await self.close()

    # ------------------------------------------------------------------ handlers

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up as soon as the server closes."""
        if seconds <= 0 or self._closing is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def _account(self, email: str | None) -> FakeLibrary:
        """The library an ``email`` parameter selects, or _BadRequest."""
        if not self.emails:
            return self.library
        if not email:
            if len(self.emails) > 1:
                raise _BadRequest
            return self.library
        library = self.libraries.get(email.strip().lower())
        if library is None:
            raise _BadRequest
        return library

    def _draw_fault(self, number: int) -> str | None:
        faults = self._faults
        # Draw on every request so the sequence does not depend on ``at`` or the rate.
        roll = self._rng.random()
        pick = self._rng.choice(faults.kinds) if faults.kinds else None
        chosen = faults.at.get(number)
        if chosen is None and roll < faults.rate:
            chosen = pick
        return chosen

    def _insert_due(self, request: web.Request) -> None:
        per_request = self._faults.inserts_per_request
        if not per_request:
            return
        self._insert_debt += per_request
        n = int(self._insert_debt)
        if n:
            self._insert_debt -= n
            try:
                library = self._account(request.query.get("email"))
            except _BadRequest:
                library = self.library
            library.insert_tasks(n)

    def _assets_body(self, request: web.Request) -> tuple[int, bytes]:
        """The status and JSON body of a normal answer to an assets request."""
        if not self._authorized(request):
            return 401, b'{"error":"Unauthorized","code":401}'
        query = request.query
        try:
            page_num = _positive_int(query.get("pageNum"), 1)
            page_size = _positive_int(query.get("pageSize"), 40)
            content_type = query.get("contentType") or None
            if content_type is not None and content_type not in CONTENT_TYPES:
                raise _BadRequest
            library = self._account(query.get("email"))
        except _BadRequest:
            return 400, b'{"error":"Invalid parameters"}'
        return 200, library.page_bytes(
            page_num,
            page_size,
            content_type,
            cap=self.page_size_cap,
            offsets=self.cap_offsets,
            past_end=self.past_end,
            **self._clock_stamp(),
        )

    def _clock_stamp(self) -> dict[str, int | None]:
        """The ``clock`` argument of page_bytes for this request (none: the library's)."""
        mode = self.clock
        if mode == "library":
            return {}
        now = int(time.time() * 1000)
        if mode == "absent":
            return {"clock": None}
        if mode == "constant":
            return {"clock": 1_744_858_514_499}
        if mode == "coarse":
            return {"clock": now // 1000 * 1000}
        if mode == "backwards":
            return {"clock": 1_744_858_514_499 - 1000 * self.stats.requests}
        if mode == "skewed":
            return {"clock": now + (5000 if self.stats.requests % 2 else 0)}
        return {"clock": now}

    async def _handle_assets(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.api_times.append(time.monotonic())
        stats.requests += 1
        number = stats.requests
        stats.last_headers = CIMultiDict(request.headers)
        raw_page = request.query.get("pageNum")
        raw_size = request.query.get("pageSize") or "40"
        if raw_page is None or raw_page == "":
            stats.pages.append(1)
            stats.page_sizes.append(int(raw_size) if _INT.fullmatch(raw_size) else 0)
        elif _INT.fullmatch(raw_page):
            stats.pages.append(int(raw_page))
            stats.page_sizes.append(int(raw_size) if _INT.fullmatch(raw_size) else 0)
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            await self._pause(self.latency)
            self._insert_due(request)
            fault = self._draw_fault(number)
            only = self._faults.email
            if only is not None and (request.query.get("email") or "").strip().lower() != (
                only.strip().lower()
            ):
                fault = None
            if fault is not None:
                stats.faults[fault] += 1
            if fault == "slow":
                await self._pause(self._faults.slow_seconds)
                fault = None
            if fault is not None and fault not in ("drop", "broken_json"):
                response = self._error_response(fault)
            else:
                status, body = self._assets_body(request)
                if fault == "drop":
                    return await self._drop(request, body)
                if fault == "broken_json":
                    status, body = 200, body[: max(1, len(body) // 2)]
                response = web.Response(
                    status=status, body=body, content_type="application/json", charset="utf-8"
                )
            stats.statuses[response.status] += 1
            return response
        finally:
            stats.in_flight -= 1

    def _error_response(self, fault: str) -> web.Response:
        faults = self._faults
        if fault == "429":
            headers = {} if faults.omit_retry_after else {"Retry-After": faults.retry_after}
            return _json(429, {"error": _CAPACITY, "code": 429}, headers)
        if fault == "429_body":
            try:
                seconds: float = float(faults.retry_after)
            except ValueError:
                seconds = 0
            wait = int(seconds) if seconds == int(seconds) else seconds
            return _json(429, {"error": _CAPACITY, "retryAfter": wait})
        if fault in ("502", "504"):
            html = _HTML_502 if fault == "502" else _HTML_504
            return web.Response(status=int(fault), text=html, content_type="text/html")
        if fault == "500":
            return _json(500, {"error": "Internal Server Error", "code": 500})
        return _json(503, {"error": "Service Unavailable", "code": 503})

    async def _drop(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Promise the whole body, send half of it, then close the connection."""
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        transport = request.transport
        if transport is not None:
            transport.close()  # close() flushes what was written, then hangs up
        return response

    async def _handle_download(self, request: web.Request) -> web.Response:
        self.stats.api_times.append(time.monotonic())
        self.stats.downloads += 1
        response = self._download(request)
        self.stats.statuses[response.status] += 1
        return response

    async def _handle_accounts(self, request: web.Request) -> web.Response:
        stats = self.stats
        stats.api_times.append(time.monotonic())
        stats.accounts_requests += 1
        response = self._accounts(request)
        stats.statuses[response.status] += 1
        return response

    def _accounts(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json(401, {"error": "Unauthorized", "code": 401})
        if not self.emails:
            return web.Response(status=404, text=_NO_CONFIGURATION, content_type="text/plain")
        body: dict[str, Any] = {}
        for i, email in enumerate(self.emails):
            user_id = 10_000 + i
            body[email] = {
                "email": email,
                "maxJobs": 5,
                "session": {
                    "userId": user_id,
                    "ExpireTime": 1_746_760_011_119,
                    "ExpireTimeUTC": "2025-05-09T03:06:51.119Z",
                },
                "password": "…secured…",
            }
        return _json(200, body)

    def _download(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json(401, {"error": "Unauthorized", "code": 401})
        query = request.query
        try:
            library = self._account(query.get("email"))
            raw_ids = query.get("workIds", "").split(",")
            if not all(_INT.fullmatch(part.strip()) for part in raw_ids):
                raise _BadRequest
            work_ids = list(dict.fromkeys(int(part) for part in raw_ids))
            raw_types = query.get("fileTypes")
            wanted: set[str] | None = None
            if raw_types:
                wanted = {part.strip().upper() for part in raw_types.split(",")}
                if not wanted <= _ALL_FILE_TYPES:
                    raise _BadRequest
            files: list[str] = []
            for wid in work_ids:
                available = library.work_file_types(wid)
                if available is None:
                    raise _BadRequest
                files.extend(
                    f"{wid}.{ft.lower()}" for ft in available if wanted is None or ft in wanted
                )
            if not files:
                raise _BadRequest
        except _BadRequest:
            return _json(400, {"error": "Invalid parameters"})
        if len(work_ids) == 1 and len(files) == 1:
            url = f"{self.cdn_url}/files/{files[0]}"
        else:
            name = f"kling-{work_ids[0]}-{len(files)}.zip"
            url = f"{self.cdn_url}/zips/{name}?files={','.join(files)}"
        return _json(200, {"cdnUrl": url, "status": "success"})

    def _count_cdn(self, request: web.Request) -> None:
        self.stats.cdn_requests += 1
        if "Authorization" in request.headers:
            self.stats.cdn_auth_requests += 1

    async def _handle_cdn_file(self, request: web.Request) -> web.Response:
        self._count_cdn(request)
        match = _FILE_NAME.fullmatch(request.match_info["name"])
        if match is None:
            raise web.HTTPNotFound
        wid, ext = match.groups()
        return web.Response(
            body=FakeLibrary.file_bytes(int(wid), ext, self.file_size), content_type=_MIME[ext]
        )

    async def _handle_cdn_zip(self, request: web.Request) -> web.Response:
        self._count_cdn(request)
        names = request.query.get("files", "").split(",")
        matches = [_FILE_NAME.fullmatch(name) for name in names]
        if not request.match_info["name"].endswith(".zip") or not all(matches):
            raise web.HTTPNotFound
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for match in matches:
                assert match is not None
                wid, ext = match.groups()
                archive.writestr(
                    match.group(0), FakeLibrary.file_bytes(int(wid), ext, self.file_size)
                )
        return web.Response(body=buffer.getvalue(), content_type=_MIME["zip"])
