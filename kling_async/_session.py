"""KlingSession: the aiohttp part. It sends requests and reads bytes; meaning lives in
:mod:`kling_async._http` and the page walk in :mod:`kling_async._walk`."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, overload

import aiohttp
from yarl import URL

from . import _http
from ._retry import DEFAULT_MAX_RETRY_AFTER, Announcer, RequestGate, RetryState
from ._walk import Drift, M, Walk, WalkCheckpoint, decode_page
from ._watch import DEFAULT_MAX_BUFFER, Watcher, WatchState
from .errors import (
    DecodeError,
    NotFoundError,
    RedirectError,
    SessionClosedError,
    TransportError,
)
from .models import (
    ACCOUNTS_DECODER,
    DOWNLOAD_LINK_DECODER,
    Account,
    AssetsPage,
    DownloadLink,
    Work,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's from Python 3.11 (3.10 is supported)

__all__ = ["IterOptions", "KlingSession", "WalkOptions", "WatchOptions"]

log = logging.getLogger("kling_async")

_T = TypeVar("_T")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_CHUNK = 256 * 1024
#: What aiohttp raises that a request maps to our errors (see KlingSession._failure).
_FAILURES = (TimeoutError, asyncio.TimeoutError, aiohttp.ClientError, RuntimeError)

#: ``on_retry(status, attempt, delay)``: ``status`` is the HTTP status that is retried (429,
#: 5xx) or ``None`` for a network failure; ``attempt`` counts retries from 1; ``delay`` is the
#: wait in seconds about to start.
OnRetry = Callable[[int | None, int, float], None]


class IterOptions(TypedDict, total=False):
    """The arguments :meth:`KlingSession.iter_works` and :meth:`KlingSession.walk` share (for
    the overloads that type ``model=``; the methods document them)."""

    page_size: int
    content_type: str | None
    email: str | None
    start_page: int
    max_items: int | None
    max_pages: int | None
    since: datetime | int | None
    prefetch: int | Literal["auto"]
    max_stale_pages: int
    max_prefetch: int


class WalkOptions(IterOptions, total=False):
    """The arguments of :meth:`KlingSession.walk` besides ``model``."""

    raw: bool
    resume: WalkCheckpoint | None


class WatchOptions(TypedDict, total=False):
    """The arguments of :meth:`KlingSession.watch_works` besides ``model``."""

    interval: float
    since: datetime | int | None
    only_succeeded: bool
    state: WatchState | None
    page_size: int
    content_type: str | None
    email: str | None
    max_backoff: float
    max_pending: int
    max_pending_age: float
    max_buffer: int
    max_polls: int | None
    raw: bool


class _Shared:
    """The shared ``aiohttp.ClientSession`` as an async context manager that does nothing."""

    __slots__ = ("http",)

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def __aenter__(self) -> aiohttp.ClientSession:
        return self.http

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class _Pool:
    """A connection pool opened for the calls running outside ``async with`` in one loop."""

    __slots__ = ("http", "users")

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.users = 0


def _limit(timeout: aiohttp.ClientTimeout) -> str:
    """How a timeout reads in an error message."""
    if timeout.total is not None:
        return f"{timeout.total:g} s"
    return f"{timeout.sock_read:g} s between reads" if timeout.sock_read else "the timeout"


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class KlingSession:
    """An asyncio client for useapi.net's Kling assets API.

    Use it as an async context manager::

        async with KlingSession() as kling:          # token from USEAPI_TOKEN
            async for work in kling.iter_works():
                print(work.work_id, work.prompt)

    Inside ``async with``, every call shares one connection pool, closed at the end of the
    block. Outside it, each call (and each ``iter_works``/``iter_pages`` walk) opens its own
    pool and closes it when it ends, so nothing leaks and the object is not tied to one event
    loop. :meth:`close` ends every call, walk and watch still running with
    :class:`~kling_async.SessionClosedError`.

    Args:
        token: The useapi.net API token; falls back to the ``USEAPI_TOKEN`` environment
            variable. It is sent only to ``base_url``'s origin and never appears in a log
            line, an error or a ``repr``.
        email: The Kling account's email, required by the API when the useapi account has
            several Kling accounts; each call may override it.
        base_url: The API's base URL; defaults to the ``KLING_BASE_URL`` environment
            variable, else ``https://api.useapi.net/v1/kling``. Point either at a
            :class:`kling_async.testing.FakeKlingServer` in tests.
        session: An ``aiohttp.ClientSession`` to use for every call. It is never closed by
            this object; without one, the session opens (and closes) its own pools.
        timeout: Seconds allowed for each request, body included.
        max_retries: How many times a transient failure (429, 500, 502, 503, 504, connection
            errors, dropped bodies, timeouts) is retried before its error is raised.
        backoff_base: Base of the exponential backoff, in seconds.
        backoff_cap: Longest backoff between two tries, in seconds.
        max_response_bytes: Bodies larger than this are refused with a
            :class:`~kling_async.DecodeError` before they are read whole.
        min_request_interval: Least time, in seconds, between two API requests of this
            session (pages, prefetched pages, download links, accounts, watches; CDN files are
            not paced). One limiter serves every task that uses the session.
        max_retry_after: Longest wait honoured from a server's ``Retry-After`` (header or
            ``retryAfter`` in the body), in seconds: a longer one is waited out for this long,
            then the request is retried (it counts against ``max_retries``).
        on_retry: Called as ``on_retry(status, attempt, delay)`` just before each retry's wait
            (``status`` is ``None`` for a network failure, ``attempt`` counts from 1). Waits
            over 2 s are also logged at INFO on the ``kling_async`` logger.
        proxy: An http(s) proxy URL for every request, API and CDN alike
            (``http://user:password@proxy:3128``). Without it, the session this object creates
            follows ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY``; a ``session`` you pass
            keeps its own proxy settings. The token travels only in ``Authorization`` to the
            API (inside the TLS tunnel for https), never in ``Proxy-Authorization``.

    Raises:
        ValueError: No token was given and ``USEAPI_TOKEN`` is not set, or an argument is
            out of range (a timeout or backoff that is infinite or NaN included).
        TypeError: An argument of the wrong type.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        email: str | None = None,
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        max_response_bytes: int = 64 * 1024 * 1024,
        min_request_interval: float = 0.0,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        on_retry: OnRetry | None = None,
        proxy: str | None = None,
    ) -> None:
        if token is None:
            token = os.environ.get("USEAPI_TOKEN") or None
        if not token:
            raise ValueError(
                "no API token: pass token=... to KlingSession or set the USEAPI_TOKEN "
                "environment variable"
            )
        if not isinstance(token, str) or any(c.isspace() for c in token):
            raise ValueError("the API token must be a string without whitespace")
        if not (token.isascii() and token.isprintable()):
            # An HTTP header carries ASCII; aiohttp would fail with UnicodeEncodeError mid-request.
            raise ValueError("the API token must be printable ASCII (check USEAPI_TOKEN)")
        # Infinite or NaN seconds would reach aiohttp's and asyncio's timers and fail there.
        _http.check_seconds("timeout", timeout, positive=True)
        _http.check_seconds("backoff_base", backoff_base)
        _http.check_seconds("backoff_cap", backoff_cap)
        _http.check_count("max_retries", max_retries, minimum=0)
        _http.check_count("max_response_bytes", max_response_bytes, minimum=1)
        for name, value in (
            ("min_request_interval", min_request_interval),
            ("max_retry_after", max_retry_after),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if on_retry is not None and not callable(on_retry):
            raise TypeError("on_retry must be a callable on_retry(status, attempt, delay)")
        # Never logged nor shown in repr(): it may carry the proxy's password.
        self._proxy = _http.parse_proxy(proxy) if proxy is not None else None
        # Only the session this object creates follows the environment; a given one keeps
        # its own settings (its trust_env). Read here, not by aiohttp's trust_env, which
        # would also send ~/.netrc credentials to every host, the CDN included.
        self._env_proxies = _http.env_proxies() if session is None and proxy is None else {}
        for scheme in ("http", "https"):
            if self._env_proxies.get(scheme):
                try:
                    _http.parse_proxy(self._env_proxies[scheme])
                except ValueError:
                    # Said now, once, rather than as a ValueError from every request.
                    raise ValueError(
                        f"{scheme.upper()}_PROXY in the environment is not an http(s) proxy URL"
                    ) from None
        self._base_url = _http.resolve_base_url(base_url)
        self._origin = self._base_url.origin()
        # Every API request goes to this origin first: its proxy, looked up once.
        self._api_proxy = self._proxy_for(self._base_url)
        self._assets_url = _http.assets_url(self._base_url)
        self._download_url = _http.download_url(self._base_url)
        self._accounts_url = _http.accounts_url(self._base_url)
        self._email = _http.check_email(email)
        self._headers = _http.request_headers(token)
        # A server may echo the token back (a proxy's error page, a debug body): every text
        # of a server's that this client shows or raises is redacted.
        self._secrets = _http.secret_forms(token)
        self._plain_headers = {"User-Agent": _http.USER_AGENT}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_retries = max_retries
        self.on_retry = on_retry
        # One gate for the whole session: the pace and the 429/5xx backoff apply to every
        # API request, whichever walk, prefetch, download or watch sends it.
        self._gate = RequestGate(
            base=backoff_base,
            cap=backoff_cap,
            max_retry_after=max_retry_after,
            min_interval=min_request_interval,
            sleep=self._sleep,
        )
        self.max_response_bytes = max_response_bytes
        # The pool every call shares: the caller's session, or ours inside `async with`.
        self._session = session
        self._owns_session = session is None
        # Pools of calls made outside `async with`, per event loop, closed by their last user.
        self._pools: dict[asyncio.AbstractEventLoop, _Pool] = {}
        # Sleeps (backoffs, watch intervals) that close() must cut short.
        self._close_waiters: set[asyncio.Future[None]] = set()
        # Responses whose bodies are being read: close() wakes their readers (see close()).
        self._reading: set[aiohttp.ClientResponse] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"KlingSession(base_url={str(self._base_url)!r}, email={self._email!r}, token='***')"

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> KlingSession:
        self._check_open()
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """End every call, walk and watch of this session and close the pools it opened.

        Whatever is still running, a request or a wait for a backoff, ends promptly with
        :class:`~kling_async.SessionClosedError`; so does any later call. An
        ``aiohttp.ClientSession`` passed as ``session=`` is left open (the requests this
        object has in flight on it are cancelled). Safe to call twice.
        """
        self._closed = True
        for waiter in list(self._close_waiters):
            _wake(waiter)
        for resp in list(self._reading):
            # aiohttp does not wake a body's reader when its connection is closed (the
            # protocol lets go of the payload first): the read would wait out its timeout.
            resp.content.set_exception(aiohttp.ClientConnectionError("the KlingSession closed"))
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - close() is a coroutine: a loop runs
            loop = None
        # Closing a pool breaks off the requests in flight on it; pools of another loop are
        # closed by their own users, who find the session closed at their next step.
        pools = [p.http for key, p in list(self._pools.items()) if key is loop]
        if self._owns_session and self._session is not None:
            pools.append(self._session)
        for http in pools:
            if not http.closed:
                await http.close()

    def _scrub(self, text: str) -> str:
        """A message built from a server's or aiohttp's text: one line, no token."""
        return _http.one_line(_http.redact_text(text, self._secrets), limit=1000)

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError("this KlingSession is closed")
        if self._session is not None and self._session.closed:
            raise SessionClosedError("the aiohttp.ClientSession given to KlingSession is closed")

    def _pool(self) -> AbstractAsyncContextManager[aiohttp.ClientSession]:
        """The connection pool for one call: the shared one, else one opened for the calls
        running outside ``async with`` in this loop, closed when the last of them ends."""
        self._check_open()
        if self._session is not None:
            return _Shared(self._session)  # every request of a walk: no generator to run
        return self._loop_pool()

    @asynccontextmanager
    async def _loop_pool(self) -> AsyncIterator[aiohttp.ClientSession]:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None or pool.http.closed:
            pool = self._pools[loop] = _Pool(aiohttp.ClientSession())
        pool.users += 1
        try:
            yield pool.http
        finally:
            pool.users -= 1
            if pool.users == 0:
                if self._pools.get(loop) is pool:
                    del self._pools[loop]
                await pool.http.close()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, unless :meth:`close` comes first: then raise SessionClosedError."""
        self._check_open()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(seconds, _wake, waiter)
        self._close_waiters.add(waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._close_waiters.discard(waiter)
        self._check_open()

    async def _until_closed(self, request: Coroutine[Any, Any, _T]) -> _T:
        """Await ``request`` unless :meth:`close` comes first: then end it and raise
        SessionClosedError. For a caller's aiohttp session, whose connections close() does
        not own and so cannot break off."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(request)
        waiter: asyncio.Future[None] = loop.create_future()
        self._close_waiters.add(waiter)
        try:
            await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when we are cancelled: the request never outlives its caller
            self._close_waiters.discard(waiter)
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))
        if task.cancelled():  # by the finally above: close() came first
            self._check_open()
        return task.result()

    @property
    def http(self) -> aiohttp.ClientSession:
        """The shared ``aiohttp.ClientSession``: inside ``async with``, or the one given.

        It carries no default headers: the token is added per request, and only to the API.
        To fetch CDN files, prefer :meth:`open_cdn`, which works outside ``async with`` too.

        Raises:
            RuntimeError: Outside ``async with`` without ``session=`` (each call then opens
                its own pool: there is none to share).
            SessionClosedError: The session is closed.
        """
        self._check_open()
        if self._session is None:
            raise RuntimeError(
                "KlingSession.http exists only inside `async with KlingSession(...)` or with "
                "session=...; outside it each call opens and closes its own connection pool"
            )
        return self._session

    @property
    def base_url(self) -> str:
        """The API's base URL."""
        return str(self._base_url)

    @property
    def email(self) -> str | None:
        """The default Kling account email, or ``None``."""
        return self._email

    @property
    def backoff_base(self) -> float:
        """Base of the exponential backoff, in seconds."""
        return self._gate.base

    @backoff_base.setter
    def backoff_base(self, value: float) -> None:
        self._gate.base = value

    @property
    def backoff_cap(self) -> float:
        """Longest backoff between two tries, in seconds."""
        return self._gate.cap

    @backoff_cap.setter
    def backoff_cap(self, value: float) -> None:
        self._gate.cap = value

    @property
    def min_request_interval(self) -> float:
        """Least time between two API requests of this session, in seconds."""
        return self._gate.min_interval

    @property
    def max_retry_after(self) -> float:
        """Longest ``Retry-After`` honoured as such, in seconds."""
        return self._gate.max_retry_after

    def new_retry_state(self) -> RetryState:
        """Per-call (or per-walk) request and retry counters in front of the session's
        shared pace and backoff."""
        return RetryState(self._gate)

    def _new_cdn_retry_state(self) -> RetryState:
        """A backoff of its own for CDN fetches: not paced, and pausing no API request."""
        return RetryState(
            base=self._gate.base,
            cap=self._gate.cap,
            max_retry_after=self._gate.max_retry_after,
            sleep=self._sleep,
        )

    def _add_announcer(self, announcer: Announcer) -> None:
        """Call ``announcer(message, seconds)`` when a wait over 2 s starts (the CLI's
        progress line)."""
        self._gate.announcers.append(announcer)

    def _announce(self, message: str, seconds: float) -> None:
        """Announce a wait of ``seconds`` (logged at INFO and shown when over 2 s)."""
        self._gate.announce(message, seconds)

    def _proxy_for(self, url: URL) -> URL | None:
        """The proxy of a request to ``url``: the explicit one, else the environment's."""
        if self._proxy is not None:
            return self._proxy
        if not self._env_proxies:
            return None
        chosen = _http.proxy_for(url, self._env_proxies)
        return _http.parse_proxy(chosen) if chosen is not None else None

    # -- transport ------------------------------------------------------------------------

    @asynccontextmanager
    async def _open(
        self,
        url: URL,
        *,
        api: bool,
        timeout: aiohttp.ClientTimeout | None = None,
        pool: AbstractAsyncContextManager[aiohttp.ClientSession] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``url`` (see :meth:`_respond`) and hold the response open inside the block.

        aiohttp's errors, in the request or while the caller reads the body, come out as
        :class:`TransportError` (a refused hop as :class:`RedirectError`). ``pool``: the
        caller's pool, already open (else one is opened for this request).
        """
        timeout = timeout or self._timeout
        # API URLs name the page; a CDN URL's query is a long signature, left out.
        where = url if api else url.with_query(None).with_fragment(None)
        try:
            async with pool or self._pool() as http:
                resp = await self._respond(http, url, api=api, timeout=timeout, where=where)
                self._reading.add(resp)
                try:
                    async with resp:
                        yield resp
                finally:
                    self._reading.discard(resp)
            return
        except _FAILURES as exc:
            error = self._failure(exc, where, timeout)
        raise error  # outside the except: see _failure

    async def _respond(
        self,
        http: aiohttp.ClientSession,
        url: URL,
        *,
        api: bool,
        timeout: aiohttp.ClientTimeout,
        where: URL,
    ) -> aiohttp.ClientResponse:
        """GET ``url`` in the pool ``http``, following redirects by hand (http and https
        only); the first response that is no redirect, open: the caller releases it.

        With ``api``, ``url`` is built from the API's base URL (checked when the session was
        made) and ``Authorization`` goes to the hops on the API's origin and no other;
        without it, never. aiohttp's own redirect handling is off so this rule has no gaps.
        aiohttp's errors are raised as they come (the caller maps them: :meth:`_failure`).
        """
        # The API's first hop is on its origin, checked once (resolve_base_url).
        first = api
        if not api:
            url = _http.check_hop(url)
        for _ in range(_MAX_REDIRECTS + 1):
            if first:
                on_api, proxy, first = True, self._api_proxy, False
            else:
                on_api = api and url.origin() == self._origin
                proxy = self._proxy_for(url)
            if log.isEnabledFor(logging.DEBUG):
                via = " (through a proxy)" if proxy is not None else ""
                log.debug("GET %s%s", url, via)
            resp = await http.get(
                url,
                headers=self._headers if on_api else self._plain_headers,
                allow_redirects=False,
                timeout=timeout,
                proxy=proxy,
            )
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            async with resp:  # released (as aiohttp's own context manager would) before
                pass  # the next hop, or before a refused one raises
            url = self._redirect_target(url, location)
        raise RedirectError(f"more than {_MAX_REDIRECTS} redirects from {where}")

    def _failure(
        self, exc: BaseException, where: URL, timeout: aiohttp.ClientTimeout
    ) -> BaseException:
        """What an aiohttp failure (one of :data:`_FAILURES`) is to our caller, to raise
        outside the ``except`` block that caught it: an aiohttp error's context may hold the
        request headers, token included, and an exception raised inside the block keeps
        that error as its ``__context__``. Raises SessionClosedError itself when the failure
        is aiohttp's "Session is closed" after our close() (or the caller's)."""
        error: BaseException
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):  # distinct types before 3.11
            error = TransportError(f"no complete response within {_limit(timeout)} from {where}")
            error.__cause__ = exc
        elif isinstance(exc, aiohttp.ClientResponseError):
            # Its request_info holds the request headers, token included: not chained.
            error = TransportError(self._scrub(f"{type(exc).__name__} from {where}: {exc.message}"))
            error.__suppress_context__ = True
        elif isinstance(exc, aiohttp.ClientError):
            error = TransportError(self._scrub(f"{type(exc).__name__} from {where}: {exc}"))
            error.__cause__ = exc
        else:  # RuntimeError: aiohttp's "Session is closed", ours by close() or the caller's
            self._check_open()
            error = exc
        return error

    def _redirect_target(self, url: URL, location: str) -> URL:
        try:
            return _http.redirect_target(url, location)
        except RedirectError as exc:  # its text may quote the Location, which may quote the token
            message = self._scrub(str(exc))
        raise RedirectError(message)  # outside the except: no unscrubbed __context__

    def open_cdn(
        self, url: str | URL, *, timeout: aiohttp.ClientTimeout | None = None
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """Open a file on Kling's CDN (a :class:`DownloadLink`'s ``cdn_url``) for streaming.

        ``async with kling.open_cdn(link.cdn_url) as resp:`` gives the aiohttp response after
        redirects, which are followed by hand, http(s) only. The useapi token is never sent:
        the CDN is another origin. Status codes are the caller's to check. Works inside and
        outside ``async with KlingSession()``.

        Raises:
            RedirectError: A URL or redirect that is not a usable http(s) URL, or too many
                redirects.
            TransportError: The request failed (connection, timeout, a broken response),
                also while the body is read inside the block.
            SessionClosedError: The session is closed.
        """
        try:
            parsed = URL(url)
        except (ValueError, TypeError, UnicodeError) as exc:
            raise RedirectError(f"unusable URL: {exc}") from None
        return self._open(parsed, api=False, timeout=timeout)

    async def _send(
        self, url: URL, http: aiohttp.ClientSession
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One API GET (in the caller's pool ``http``): status, headers and the body, read
        inside the request. aiohttp's errors come out as in :meth:`_open`."""
        # Every attempt, in the task that sends it: close() may have come between two.
        self._check_open()
        timeout = self._timeout
        try:
            resp = await self._respond(http, url, api=True, timeout=timeout, where=url)
            reading = self._reading
            reading.add(resp)
            try:
                length = resp.content_length
                if (
                    length is not None
                    and length <= self.max_response_bytes
                    and "Content-Encoding" not in resp.headers
                ):
                    # Plain bytes of a known, allowed length (the usual page): read in one
                    # call; aiohttp reads no more than Content-Length.
                    body = await resp.read()
                else:
                    body = await self._read_body(resp, url)
            finally:
                reading.discard(resp)
                resp.release()  # as aiohttp's context manager does on the way out
                await resp.wait_for_close()
            return resp.status, resp.headers, body
        except _FAILURES as exc:
            error = self._failure(exc, url, timeout)
        raise error  # outside the except: see _failure

    async def _read_body(self, resp: aiohttp.ClientResponse, url: URL) -> bytes:
        """A body of unknown or compressed length, counted as it is read (Content-Length is
        the compressed size of a gzip body)."""
        cap = self.max_response_bytes
        length = resp.content_length
        if length is not None and length > cap:
            raise DecodeError(str(url), f"body of {length} bytes exceeds max_response_bytes={cap}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise DecodeError(str(url), f"body exceeds max_response_bytes={cap}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _get_bytes(
        self, url: URL, params: Mapping[str, str], retry: RetryState | None = None
    ) -> tuple[bytes, URL]:
        """GET ``url`` with ``params`` and retries: see :meth:`_get`."""
        return await self._get(url.with_query(params), retry)

    async def _get(self, url: URL, retry: RetryState | None = None) -> tuple[bytes, URL]:
        """GET ``url`` with retries; return the 2xx body and the URL (for error messages).

        Transient failures are retried with backoff shared through ``retry``; anything else,
        and the last failure, is raised as its typed error. Cancellation is never caught.
        """
        self._check_open()
        retry = retry or self.new_retry_state()
        if self._session is not None:  # the shared pool (what _pool() gives), no wrapper
            return await self._get_bytes_retried(url, retry, self._session)
        async with self._loop_pool() as http:  # one pool for the retries of this call
            return await self._get_bytes_retried(url, retry, http)

    async def _get_bytes_retried(
        self, url: URL, retry: RetryState, http: aiohttp.ClientSession
    ) -> tuple[bytes, URL]:
        attempt = 0
        while True:
            if not retry.take():  # the usual request takes its slot at once
                await retry.wait()
            error: Exception
            try:
                if self._owns_session:  # close() breaks off our pools' connections itself
                    status, headers, body = await self._send(url, http)
                else:
                    status, headers, body = await self._until_closed(self._send(url, http))
            except TransportError as exc:
                # close() breaks off requests in flight: that is no failure to retry.
                self._check_open()
                error = exc
                wait_hint = None
            else:
                if 200 <= status < 300:
                    return body, url
                error = _http.error_for_response(
                    status, headers, _http.redact(body, self._secrets), url=str(url)
                )
                if not _http.is_retryable_status(status):
                    raise error
                wait_hint = _http.retry_after(headers, body)
            if attempt >= self.max_retries:
                raise error
            delay = retry.delay(attempt, wait_hint)
            attempt += 1
            self._announce_retry(error, attempt, delay, wait_hint)
            retry.push(delay)

    def _announce_retry(
        self, error: Exception, attempt: int, delay: float, wait_hint: float | None
    ) -> None:
        status = getattr(error, "status", None)
        what = f"{status} from the API" if status is not None else "network error"
        message = f"{what}: waiting {delay:.0f} s (retry {attempt}/{self.max_retries})"
        if wait_hint is not None and wait_hint > delay:
            message += f"; Retry-After {wait_hint:.0f} s capped at max_retry_after"
        log.debug("retrying after %s", error)
        self._announce(message, delay)
        if self.on_retry is not None:
            self.on_retry(status, attempt, delay)

    # -- API ------------------------------------------------------------------------------

    async def get_accounts(self) -> dict[str, Account]:
        """The Kling accounts configured in useapi (``GET /accounts``), keyed by email.

        An account whose value lacks ``email`` gets its key. The passwords the API sends are
        dropped while decoding.

        Returns:
            ``{email: Account}``; empty when none is configured (the API's plain-text 404).

        Raises:
            APIError: Any other error status (after retries for 429/5xx).
            TransportError: The request kept failing (after retries).
            DecodeError: The body is not an object of accounts.
        """
        try:
            body, url = await self._get_bytes(self._accounts_url, {})
        except NotFoundError as exc:
            if _http.is_plain_text(exc.body):
                return {}
            raise
        accounts = _http.decode(ACCOUNTS_DECODER, body, url=url)
        for email, account in accounts.items():
            if account.email is None:
                account.email = email
        return accounts

    def _params(
        self, page_num: int, page_size: int, content_type: str | None, email: str | None
    ) -> dict[str, str]:
        return _http.assets_params(
            page_num=page_num,
            page_size=page_size,
            content_type=content_type,
            email=email if email is not None else self._email,
        )

    async def get_assets(
        self,
        *,
        page_num: int = 1,
        page_size: int = 40,
        content_type: str | None = None,
        email: str | None = None,
    ) -> AssetsPage:
        """Fetch one page of ``GET /assets/`` (newest first).

        Args:
            page_num: The page, from 1.
            page_size: History entries (tasks) per page.
            content_type: ``"video"``, ``"image"``, ``"audio"`` or ``None`` for all.
            email: The Kling account; defaults to the session's.

        Returns:
            The decoded page; an empty ``history`` means past the end.

        Raises:
            ValueError: An argument out of range, before any request.
            APIError: The API answered with an error (after retries for 429/5xx).
            TransportError: The request kept failing (after retries).
            DecodeError: The body is not an assets page.
        """
        params = self._params(page_num, page_size, content_type, email)
        body, url = await self._get_bytes(self._assets_url, params)
        return decode_page(body, url, Drift())

    async def get_download_link(
        self,
        work_ids: int | list[int],
        *,
        file_types: list[str] | None = None,
        email: str | None = None,
    ) -> DownloadLink:
        """Ask ``GET /assets/download`` for the watermark-free file(s) of works.

        With one work id and one file type, ``cdn_url`` is that file; otherwise a ``.zip``.
        The CDN is another origin: fetch it with :meth:`open_cdn`, which never sends the
        token.

        Raises:
            ValueError: No work id, or an unknown file type (``MP4``, ``MP3``, ``WAV``,
                ``PNG``).
        """
        ids = [work_ids] if isinstance(work_ids, int) else list(work_ids)
        params = _http.download_params(ids, file_types, email if email is not None else self._email)
        body, url = await self._get_bytes(self._download_url, params)
        return _http.decode(DOWNLOAD_LINK_DECODER, body, url=url)

    @overload
    def walk(self, *, model: None = None, **options: Unpack[WalkOptions]) -> Walk[Work]: ...

    @overload
    def walk(self, *, model: type[M], **options: Unpack[WalkOptions]) -> Walk[M]: ...

    def walk(
        self,
        *,
        page_size: int = 40,
        content_type: str | None = None,
        email: str | None = None,
        start_page: int = 1,
        max_items: int | None = None,
        max_pages: int | None = None,
        since: datetime | int | None = None,
        prefetch: int | Literal["auto"] = 0,
        max_stale_pages: int = 3,
        max_prefetch: int = 8,
        raw: bool = False,
        resume: WalkCheckpoint | None = None,
        model: type[Any] | None = None,
    ) -> Walk[Any]:
        """A page walk as an object: iterate it for :class:`WorkPage` batches, read its
        ``stats`` (pages, retries, duplicates, probes), take a ``checkpoint()`` to resume later
        and ``stop()`` it after the batch in hand.

        :meth:`iter_works` and :meth:`iter_pages` are built on it; the arguments are theirs
        (``model`` included), plus ``raw`` (also keep each work exactly as sent, as
        ``msgspec.Raw``) and ``resume`` (continue a walk from a :class:`WalkCheckpoint`).
        """
        return Walk(
            self,
            page_size=page_size,
            content_type=content_type,
            email=email if email is not None else self._email,
            start_page=start_page,
            max_items=max_items,
            max_pages=max_pages,
            since=since,
            prefetch=prefetch,
            max_stale_pages=max_stale_pages,
            max_prefetch=max_prefetch,
            raw=raw,
            resume=resume,
            model=Work if model is None else model,
        )

    async def iter_pages(
        self,
        *,
        page_size: int = 40,
        content_type: str | None = None,
        email: str | None = None,
        start_page: int = 1,
        max_items: int | None = None,
        max_pages: int | None = None,
        since: datetime | int | None = None,
        prefetch: int | Literal["auto"] = 0,
        max_stale_pages: int = 3,
        max_prefetch: int = 8,
    ) -> AsyncIterator[AssetsPage]:
        """Yield each page from ``start_page`` until a page comes back with an empty history.

        Pages are yielded as the API sent them; see :meth:`iter_works` for the arguments.
        """
        walk = self.walk(
            page_size=page_size,
            content_type=content_type,
            email=email,
            start_page=start_page,
            max_items=max_items,
            max_pages=max_pages,
            since=since,
            prefetch=prefetch,
            max_stale_pages=max_stale_pages,
            max_prefetch=max_prefetch,
        )
        # One pool for the whole walk when outside `async with`.
        async with self._pool(), aclosing(walk.__aiter__()) as batches:
            async for batch in batches:
                yield batch.page

    @overload
    def iter_works(
        self, *, model: None = None, **options: Unpack[IterOptions]
    ) -> AsyncIterator[Work]: ...

    @overload
    def iter_works(self, *, model: type[M], **options: Unpack[IterOptions]) -> AsyncIterator[M]: ...

    def iter_works(
        self,
        *,
        page_size: int = 40,
        content_type: str | None = None,
        email: str | None = None,
        start_page: int = 1,
        max_items: int | None = None,
        max_pages: int | None = None,
        since: datetime | int | None = None,
        prefetch: int | Literal["auto"] = 0,
        max_stale_pages: int = 3,
        max_prefetch: int = 8,
        model: type[Any] | None = None,
    ) -> AsyncIterator[Any]:
        """Yield every work of the library, newest first, each at most once.

        Walks ``pageNum`` from ``start_page`` until a page comes back with an empty
        ``history``. Only about ``prefetch + 1`` pages are held at a time, so memory does not
        grow with the library. A failing page is retried (see :class:`KlingSession`); the walk
        never restarts from page 1.

        Args:
            page_size: History entries per request.
            content_type: ``"video"``, ``"image"``, ``"audio"`` or ``None``.
            email: The Kling account; defaults to the session's.
            start_page: The first page to ask for.
            max_items: Stop after this many works (no request beyond need).
            max_pages: Ask for at most this many pages.
            since: Only works created after this (an aware ``datetime`` or epoch ms); the walk
                stops at the first page that reaches older works.
            prefetch: Pages to keep requested ahead of the one being consumed (see the README:
                0 by default, the gentlest on a rate-limited account; with more, head probes
                prove the order the pages were served in), or ``"auto"``: picked from the
                latency observed, halved on a 429 or 5xx, never above ``max_prefetch``.
            max_stale_pages: Raise :class:`~kling_async.WalkStalledError` after this many
                pages in a row bring nothing new and reach no further down the list (a
                server ignoring ``pageNum``, or arrivals of a page or more per request).
            max_prefetch: The deepest ``prefetch="auto"`` may go.
            model: Decode each work into this ``msgspec.Struct`` instead of :class:`Work`:
                declared like it (``rename="camel"``), with any of its fields, same names and
                types. Only those fields are decoded (faster, less memory); the walk reads the
                ids it needs itself, so the model may leave them out.

        Raises:
            ValueError: An argument out of range, or a ``model`` with a field that is not
                one of :class:`Work`'s (a typo, or no ``rename="camel"``), when called.
            TypeError: An argument of the wrong type (``model`` not a Struct class), when
                called.
            KlingError: As :meth:`get_assets`, at the page where it happened.
        """
        walk = self.walk(
            page_size=page_size,
            content_type=content_type,
            email=email,
            start_page=start_page,
            max_items=max_items,
            max_pages=max_pages,
            since=since,
            prefetch=prefetch,
            max_stale_pages=max_stale_pages,
            max_prefetch=max_prefetch,
            model=Work if model is None else model,
        )
        return self._works(walk)

    async def _works(self, walk: Walk[M]) -> AsyncIterator[M]:
        """The works of each batch: the one generator layer per work, the caller's."""
        # One pool for the whole walk when outside `async with`.
        async with self._pool(), aclosing(walk.__aiter__()) as batches:
            async for batch in batches:
                for work in batch.works:
                    yield work

    @overload
    def watch_works(
        self, *, model: None = None, **options: Unpack[WatchOptions]
    ) -> Watcher[Work]: ...

    @overload
    def watch_works(self, *, model: type[M], **options: Unpack[WatchOptions]) -> Watcher[M]: ...

    def watch_works(
        self,
        *,
        interval: float = 30.0,
        since: datetime | int | None = None,
        only_succeeded: bool = True,
        state: WatchState | None = None,
        page_size: int = 40,
        content_type: str | None = None,
        email: str | None = None,
        max_backoff: float = 600.0,
        max_pending: int = 1000,
        max_pending_age: float = 6 * 3600.0,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_polls: int | None = None,
        raw: bool = False,
        model: type[Any] | None = None,
    ) -> Watcher[Any]:
        """Poll for new works every ``interval`` seconds and yield each exactly once.

        Each poll walks from page 1 down to the works already known (offset drift is
        deduplicated as in :meth:`iter_works`), then yields that poll's new works **oldest
        first** (the reverse of list order), so a bot handles them in the order they were
        made. ``async for work in kling.watch_works():`` runs until cancelled (or
        ``max_polls``).

        Args:
            interval: Seconds between polls.
            since: Yield works created after this (aware ``datetime`` or epoch ms). ``None``
                (and no ``state``) starts from now: works that already exist are not yielded.
            only_succeeded: Hold back works still rendering and yield each once it reaches
                status 99 (pending works are tracked up to ``max_pending``).
            state: A :class:`WatchState` saved from an earlier watcher (``watcher.state``), to
                carry on after a restart without repeating or missing a work.
            page_size: History entries per request.
            content_type: ``"video"``, ``"image"``, ``"audio"`` or ``None``.
            email: The Kling account; defaults to the session's.
            max_backoff: Longest wait after transient failures (429, 5xx, network, decode, a
                stalled poll), which back off from ``interval`` upwards without ending the
                watch.
            max_pending: Most works held back while rendering; the oldest are dropped beyond.
            max_pending_age: Seconds (of ``create_time``, behind the newest work seen) after
                which a held-back work that never succeeded (failed, deleted) is given up.
            max_buffer: Most works one poll holds before yielding them (default 1000). In a
                bigger burst the oldest are yielded and the newest wait for the next poll.
            max_polls: Stop after this many polls (``1`` for a cron job); ``None`` runs on.
            raw: Also keep each work exactly as the API sent it, in ``watcher.last_raw``.
            model: Decode each work into this ``msgspec.Struct`` instead of :class:`Work`
                (see :meth:`iter_works`); the watcher reads ids, times and status itself.

        Returns:
            A :class:`Watcher`: an async iterator of :class:`Work` whose ``state`` is current
            after every work. 400/401/402/403/404 end it with their error.
        """
        _http.check_seconds("interval", interval, positive=True)
        _http.check_seconds("max_backoff", max_backoff)
        _http.check_seconds("max_pending_age", max_pending_age)
        return Watcher(
            self,
            interval=interval,
            since=since,
            only_succeeded=only_succeeded,
            state=state,
            page_size=page_size,
            content_type=content_type,
            email=email if email is not None else self._email,
            max_backoff=max_backoff,
            max_pending=max_pending,
            max_pending_age=max_pending_age,
            max_buffer=max_buffer,
            max_polls=max_polls,
            raw=raw,
            model=Work if model is None else model,
        )
