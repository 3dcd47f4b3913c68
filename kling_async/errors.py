"""Errors raised by kling_async.

Every error derives from :class:`KlingError`, so ``except KlingError`` catches them all::

    KlingError
    ├── APIError(status, message, body)     the API answered with an error status
    │   ├── BadRequestError                  400: invalid parameters (never retried)
    │   ├── AuthenticationError              401: missing or wrong token (never retried)
    │   ├── PaymentRequiredError             402: no active useapi.net subscription
    │   ├── PermissionDeniedError            403: refused at the edge
    │   ├── NotFoundError                    404
    │   ├── RateLimitError                   429: accounts at capacity (retried; retry_after)
    │   └── ServerError                      5xx (500/502/503/504 retried)
    ├── TransportError                       connection failures, dropped bodies, timeouts
    │   └── RedirectError                    a redirect that cannot be followed
    ├── DecodeError                          a body that is not the expected JSON, or too big
    ├── SessionClosedError                   the KlingSession (or its aiohttp session) is closed
    └── WalkError                            a page walk that cannot make progress
        ├── WalkStalledError                 pages stop bringing anything new
        └── ResumeError                      a resumed walk cannot find where it left off

``str()``, ``repr()`` and the attributes of these errors never contain the API token: they
are built from the status, the response body and the URL, and the token travels only in a
request header.
"""

from __future__ import annotations

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "DecodeError",
    "KlingError",
    "NotFoundError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "RedirectError",
    "ResumeError",
    "ServerError",
    "SessionClosedError",
    "TransportError",
    "WalkError",
    "WalkStalledError",
]


class KlingError(Exception):
    """Base class of every error this library raises."""


class APIError(KlingError):
    """The API answered with an error status.

    Attributes:
        status: The HTTP status code.
        message: The body's ``error`` field when the body is JSON, else a short prefix of the
            body's text (some 404s are plain text; a proxy's 502 is HTML).
        body: The raw response body (possibly truncated to a bounded size).
        url: The URL that was requested (it never contains the token).
    """

    def __init__(self, status: int, message: str, body: bytes = b"", *, url: str = "") -> None:
        self.status = status
        self.message = message
        self.body = body
        self.url = url
        super().__init__(status, message)

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        return f"HTTP {self.status}: {self.message}{where}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.message!r})"


class BadRequestError(APIError):
    """400: the API refused the parameters (``{"error": "Invalid parameters"}``)."""


class AuthenticationError(APIError):
    """401: the token is missing or wrong. Check ``USEAPI_TOKEN``."""


class PaymentRequiredError(APIError):
    """402: the useapi.net account has no active subscription."""


class PermissionDeniedError(APIError):
    """403: the request was refused (for example at useapi.net's edge)."""


class NotFoundError(APIError):
    """404: the URL does not exist (check ``base_url``)."""


class RateLimitError(APIError):
    """429: the Kling accounts are at capacity. Retried with backoff before it is raised.

    Attributes:
        retry_after: Seconds the server asked to wait (``Retry-After`` header or a
            ``retryAfter`` field in the body), or ``None`` when it did not say.
    """

    def __init__(
        self,
        status: int,
        message: str,
        body: bytes = b"",
        *,
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, message, body, url=url)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the server or a proxy in front of it failed. 500/502/503/504 are retried first."""


class TransportError(KlingError):
    """The request did not complete: connection refused or reset, a body cut short, a timeout.

    Retried with backoff before it is raised; the cause is chained (``__cause__``).
    """


class RedirectError(TransportError):
    """A redirect that cannot be followed: a ``Location`` that is not a usable http(s) URL
    (another scheme, a bad host, port or user info, undecodable bytes), or too many hops.

    The client sends nothing to such a URL. As a :class:`TransportError`, an API request
    retries it; a media download gives up on the file at once.
    """


class SessionClosedError(KlingError):
    """The :class:`~kling_async.KlingSession` was closed, or the ``aiohttp.ClientSession``
    given to it was.

    Raised by every call made after :meth:`~kling_async.KlingSession.close` (or the end of its
    ``async with`` block), and by walks, watches and requests still running when it was
    closed, even one waiting out a backoff. Never retried.
    """


class DecodeError(KlingError):
    """A complete response whose body is not the expected JSON (or exceeds the size cap).

    Never retried: the same request would most likely get the same body. The message says
    which URL (and so which page) and why; msgspec's error is chained as ``__cause__``.

    Attributes:
        url: The URL that was requested.
        reason: Why the body was refused.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"unexpected response body from {url}: {reason}")


class WalkError(KlingError):
    """A page walk cannot go on."""


class WalkStalledError(WalkError):
    """Several pages in a row brought no work the walk had not seen.

    Raised instead of looping forever when a server ignores ``pageNum`` (the same page again
    and again), or when works arrive at the head of the list so fast (a page or more per
    request) that no page-number walk can reach the end.

    Attributes:
        page_num: The page at which the walk gave up.
        stale_pages: How many pages in a row brought nothing new.
    """

    def __init__(self, page_num: int, stale_pages: int) -> None:
        self.page_num = page_num
        self.stale_pages = stale_pages
        super().__init__(
            f"page walk stalled at page {page_num}: {stale_pages} pages in a row brought "
            "nothing new (the server ignores pageNum, or new works arrive faster than "
            "a page per request)"
        )


class ResumeError(WalkError):
    """A walk resumed from a checkpoint reached the end without finding its place.

    The resumed walk finds where it left off by the ids of the works it handed out last; if
    all of them were deleted meanwhile, it cannot tell which works are new to it, and stops
    rather than repeat or skip works. Start a new walk.
    """
