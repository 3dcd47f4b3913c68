"""The seam between bytes and meaning: no I/O here.

Building requests, turning ``(status, headers, body)`` into a result or a typed error,
reading ``Retry-After`` and choosing backoff delays are plain functions, tested without a
server. :mod:`kling_async._session` only moves bytes.
"""

from __future__ import annotations

import random
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Final, TypeVar

import msgspec
from yarl import URL

from ._version import __version__
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    DecodeError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)

T = TypeVar("T")

DEFAULT_BASE_URL: Final = "https://api.useapi.net/v1/kling"
USER_AGENT: Final = f"kling-async/{__version__}"
CONTENT_TYPES: Final = ("video", "image", "audio")
FILE_TYPES: Final = ("MP4", "MP3", "WAV", "PNG")
RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
#: How much of a non-JSON error body becomes the error's message.
MESSAGE_PREFIX: Final = 200
#: How much of an error body an :class:`APIError` keeps.
ERROR_BODY_LIMIT: Final = 64 * 1024

#: What a body that is not the expected JSON can raise while it is decoded: invalid UTF-8 in a
#: string and pathological nesting (in fields typed Any) surface outside msgspec's own errors.
_BAD_JSON: Final = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    UnicodeDecodeError,
    RecursionError,
)

_STATUS_ERRORS: Final[Mapping[int, type[APIError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def normalize_base_url(base_url: str) -> URL:
    """Parse ``base_url`` and check that it is an absolute http(s) URL.

    Raises:
        ValueError: When it is not.
    """
    url = URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
    if url.query_string or url.fragment:
        raise ValueError(f"base_url must not carry a query or fragment, got {base_url!r}")
    return url.with_path(url.path.rstrip("/"))


def assets_url(base_url: URL) -> URL:
    """``{base_url}/assets/``."""
    return base_url.with_path(base_url.path + "/assets/")


def download_url(base_url: URL) -> URL:
    """``{base_url}/assets/download``."""
    return base_url.with_path(base_url.path + "/assets/download")


def accounts_url(base_url: URL) -> URL:
    """``{base_url}/accounts``."""
    return base_url.with_path(base_url.path + "/accounts")


def request_headers(token: str) -> dict[str, str]:
    """Headers sent with every API request. The token goes only to the API's origin."""
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


def parse_proxy(proxy: str) -> URL:
    """A proxy URL, checked. A value without a scheme (``proxy:3128``) means ``http://``, as
    curl and urllib read it. Credentials in it (``user:password@``) stay: aiohttp turns them
    into ``Proxy-Authorization``, the only thing that header ever carries (never the token).

    Raises:
        ValueError: Not a usable http(s) proxy URL.
    """
    text = proxy.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        url = URL(text)
    except (ValueError, TypeError):
        raise ValueError("the proxy must be an http(s) URL such as http://proxy:3128") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("the proxy must be an http(s) URL such as http://proxy:3128")
    return url.with_path("").with_query(None).with_fragment(None)


def env_proxies() -> dict[str, str]:
    """``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY`` (either case) as urllib reads them:
    ``{"http": ..., "https": ..., "no": ...}``."""
    return dict(urllib.request.getproxies_environment())


def proxy_for(url: URL, proxies: Mapping[str, str]) -> str | None:
    """The proxy ``proxies`` (from :func:`env_proxies`) name for ``url``, or ``None``: none
    for its scheme, or its host matches ``NO_PROXY``."""
    chosen = proxies.get(url.scheme)
    if not chosen or not url.host:
        return None
    host = f"{url.host}:{url.port}" if url.port is not None else url.host
    if urllib.request.proxy_bypass_environment(host, proxies):  # type: ignore[attr-defined]
        return None
    return chosen


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_content_type(content_type: str | None) -> str | None:
    """Return ``content_type`` if it is ``None`` or one the API knows, else raise ValueError."""
    if content_type is not None and content_type not in CONTENT_TYPES:
        raise ValueError(
            f"content_type must be one of {', '.join(CONTENT_TYPES)} or None, got {content_type!r}"
        )
    return content_type


def check_email(email: str | None) -> str | None:
    """Return ``email`` if it is ``None`` or a non-empty string, else raise."""
    if email is None:
        return None
    if not isinstance(email, str):
        raise TypeError(f"email must be a str, got {type(email).__name__}")
    if not email.strip():
        raise ValueError("email must not be empty")
    try:
        email.encode("utf-8")
    except UnicodeEncodeError:
        # yarl would silently drop a lone surrogate and send another address.
        raise ValueError("email must be valid Unicode text (it holds a lone surrogate)") from None
    return email


def assets_params(
    *,
    page_num: int,
    page_size: int,
    content_type: str | None,
    email: str | None,
) -> dict[str, str]:
    """Query parameters of ``GET /assets/``; only those that are set.

    Values are passed unencoded: the HTTP layer percent-encodes each one, so an ``email``
    holding ``&``, ``=``, ``#``, ``+`` or spaces stays one parameter.

    Raises:
        ValueError: ``page_num < 1``, ``page_size < 1``, an unknown ``content_type``, or an
            empty ``email``.
        TypeError: A non-int page number or size.
    """
    params = {
        "pageNum": str(_check_positive_int("page_num", page_num)),
        "pageSize": str(_check_positive_int("page_size", page_size)),
    }
    if check_content_type(content_type) is not None:
        params["contentType"] = str(content_type)
    if check_email(email) is not None:
        params["email"] = str(email)
    return params


def download_params(
    work_ids: list[int], file_types: list[str] | None, email: str | None
) -> dict[str, str]:
    """Query parameters of ``GET /assets/download``.

    Raises:
        ValueError: No work ids, a work id that is not a positive int, or an unknown file type.
    """
    if not work_ids:
        raise ValueError("work_ids must name at least one work")
    for work_id in work_ids:
        _check_positive_int("work id", work_id)
    params = {"workIds": ",".join(str(w) for w in work_ids)}
    if file_types:
        unknown = [t for t in file_types if t not in FILE_TYPES]
        if unknown:
            raise ValueError(f"unknown file types {unknown}; known: {', '.join(FILE_TYPES)}")
        params["fileTypes"] = ",".join(file_types)
    if check_email(email) is not None:
        params["email"] = str(email)
    return params


class _ErrorBody(msgspec.Struct, gc=False):
    error: str | None = None
    retryAfter: float | None = None  # the wire name: a body-level Retry-After


_ERROR_BODY_DECODER: Final = msgspec.json.Decoder(_ErrorBody)


def _error_body(body: bytes) -> _ErrorBody | None:
    try:
        return _ERROR_BODY_DECODER.decode(body)
    except _BAD_JSON:
        return None


def error_message(body: bytes) -> str:
    """The body's ``error`` field when it is JSON, else a short, single-line prefix of it."""
    parsed = _error_body(body)
    if parsed is not None and parsed.error:
        return parsed.error
    text = body[:MESSAGE_PREFIX].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    if len(body) > MESSAGE_PREFIX:
        text += "…"
    return text or "(empty body)"


def is_plain_text(body: bytes) -> bool:
    """Whether an error body is not JSON (useapi's "none configured" 404 of ``/accounts``)."""
    try:
        msgspec.json.decode(body)
    except _BAD_JSON:
        return True
    return False


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns ``None`` when the header is absent or unreadable; never a negative number.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def retry_after(headers: Mapping[str, str], body: bytes) -> float | None:
    """The wait the server asked for: the ``Retry-After`` header, else ``retryAfter`` in a
    JSON body (seconds), else ``None``."""
    from_header = parse_retry_after(headers.get("Retry-After"))
    if from_header is not None:
        return from_header
    parsed = _error_body(body)
    if parsed is not None and parsed.retryAfter is not None and parsed.retryAfter >= 0:
        return float(parsed.retryAfter)
    return None


def is_retryable_status(status: int) -> bool:
    """429, 500, 502, 503 and 504 are worth another try on an idempotent GET."""
    return status in RETRYABLE_STATUSES


def error_for_response(
    status: int, headers: Mapping[str, str], body: bytes, *, url: str
) -> APIError:
    """The typed error for a non-2xx response."""
    message = error_message(body)
    kept = body[:ERROR_BODY_LIMIT]
    if status == 429:
        return RateLimitError(
            status, message, kept, url=url, retry_after=retry_after(headers, body)
        )
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    return cls(status, message, kept, url=url)


def decode(decoder: msgspec.json.Decoder[T], body: bytes, *, url: str) -> T:
    """Decode a 200 body, or raise :class:`DecodeError` saying where and why."""
    try:
        return decoder.decode(body)
    except _BAD_JSON as exc:
        raise DecodeError(url, str(exc)) from exc


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``.

    ``attempt`` counts from 0 for the first retry.
    """
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return (rng or random).uniform(0.0, ceiling)
