"""The seam between bytes and meaning: no I/O here.

Building requests, turning ``(status, headers, body)`` into a result or a typed error,
reading ``Retry-After`` and choosing backoff delays are plain functions, tested without a
server. :mod:`kling_async._session` only moves bytes.
"""

from __future__ import annotations

import functools
import math
import os
import random
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Final, TypeVar
from urllib.parse import quote

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
    RedirectError,
    ServerError,
)

T = TypeVar("T")

DEFAULT_BASE_URL: Final = "https://api.useapi.net/v1/kling"
#: The environment variable that overrides :data:`DEFAULT_BASE_URL` (for a fake server).
BASE_URL_ENV: Final = "KLING_BASE_URL"
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


def env_base_url() -> str | None:
    """The base URL set in ``KLING_BASE_URL``, or None when it is unset or empty."""
    return os.environ.get(BASE_URL_ENV) or None


def resolve_base_url(base_url: str | None) -> URL:
    """``base_url``, else ``KLING_BASE_URL``, else useapi.net's, parsed and checked.

    Raises:
        ValueError: It is not an absolute http(s) URL (the message names its source).
    """
    if base_url is not None:
        return normalize_base_url(base_url)
    from_env = env_base_url()
    if from_env is None:
        return normalize_base_url(DEFAULT_BASE_URL)
    return normalize_base_url(from_env, name=BASE_URL_ENV)


def normalize_base_url(base_url: str, *, name: str = "base_url") -> URL:
    """Parse ``base_url`` and check that it is an absolute http(s) URL.

    Raises:
        ValueError: When it is not.
    """
    if not isinstance(base_url, str):
        raise TypeError(f"{name} must be a str, got {type(base_url).__name__}")
    try:
        url = URL(base_url)
        host = url.host
    except (ValueError, UnicodeError):  # a bad port, IPv6 address or host name
        host = None
    if host is None or url.scheme not in ("http", "https"):
        raise ValueError(f"{name} must be an absolute http(s) URL, got {base_url!r}")
    if url.query_string or url.fragment:
        raise ValueError(f"{name} must not carry a query or fragment, got {base_url!r}")
    if url.raw_user is not None or url.raw_password is not None:
        raise ValueError(f"{name} must not carry user info (user:password@)")
    try:
        check_hop(url)  # a host name IDNA refuses would fail only in getaddrinfo
    except RedirectError as exc:
        raise ValueError(f"{name} {base_url!r}: {exc}") from None
    return url.with_path(url.path.rstrip("/"))


@functools.lru_cache(maxsize=256)
def _check_idna(host: str) -> None:
    """Raise UnicodeError if IDNA refuses ``host`` (cached: every page asks the same host)."""
    host.encode("idna")


def check_hop(url: URL) -> URL:
    """A URL the client will request (a CDN URL or a redirect's target), or RedirectError.

    Only absolute http(s) URLs with a host that decodes, a port in range and no user info
    (aiohttp would turn it into an ``Authorization`` header) are requested.
    """
    try:
        # yarl parses and decodes lazily: fail here, not inside aiohttp's request.
        host, _ = url.host, url.port
        if url.raw_host:
            _check_idna(url.raw_host)  # as getaddrinfo will: label lengths, characters
    except (ValueError, UnicodeError) as exc:  # UnicodeError: IDNA refused the host
        raise RedirectError(f"unusable URL: {exc}") from None
    if url.scheme not in ("http", "https") or not host:
        raise RedirectError(f"refusing a non-http(s) URL ({url.scheme or 'no'} scheme)")
    if url.raw_user is not None or url.raw_password is not None:
        raise RedirectError("refusing a URL with user info (user:password@)")
    return url


def redirect_target(current: URL, location: str) -> URL:
    """Where a redirect's ``Location`` leads from ``current``, checked like every hop.

    Raises:
        RedirectError: The ``Location`` is not valid UTF-8, does not parse (a bad IPv6 host,
            port or host name), or leads to a URL :func:`check_hop` refuses.
    """
    try:
        location.encode("utf-8")  # aiohttp keeps undecodable header bytes as surrogates
        target = current.join(URL(location))
    except UnicodeEncodeError:
        raise RedirectError("unusable redirect Location: not valid UTF-8") from None
    except (ValueError, UnicodeError) as exc:
        raise RedirectError(f"unusable redirect Location: {exc}") from None
    return check_hop(target)


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


def check_seconds(name: str, value: object, *, positive: bool = False) -> float:
    """A finite number of seconds, ``> 0`` when ``positive`` else ``>= 0``.

    Raises:
        TypeError: Not an int or float.
        ValueError: Infinite, NaN or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'>' if positive else '>='} 0 seconds, got {value}")
    return float(value)


def check_count(name: str, value: object, *, minimum: int) -> int:
    """An int no smaller than ``minimum``.

    Raises:
        TypeError: Not an int.
        ValueError: Smaller than ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


#: Integers in this range are refused as epoch milliseconds: they are epoch seconds of
#: 2001-2286, and as milliseconds they would mean January 1970 to March 1973.
EPOCH_SECONDS_RANGE: Final = range(10**9, 10**11)


def check_epoch_ms(value: int, name: str = "since") -> int:
    """Epoch milliseconds, refusing negatives and numbers that look like epoch seconds.

    The one rule for ``since`` in the library and in ``kling-async export --since``.
    ``name`` starts the error message (none when empty).

    Raises:
        ValueError: ``value`` is negative or looks like epoch seconds.
    """
    prefix = f"{name}: " if name else ""
    if value < 0:
        raise ValueError(f"{prefix}must be >= 0, got {value}")
    if value in EPOCH_SECONDS_RANGE:
        raise ValueError(
            f"{prefix}{value} looks like epoch seconds; give epoch milliseconds ({value * 1000})"
        )
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


def one_line(text: str, limit: int = MESSAGE_PREFIX) -> str:
    """``text`` made safe to print as one line: whitespace runs become one space, other
    control characters (a terminal's escape sequences) become ``?``, and it is cut at
    ``limit`` characters."""
    text = " ".join(text.split())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "…"


def error_message(body: bytes) -> str:
    """The body's ``error`` field when it is JSON, else a short prefix of it; one printable
    line either way (a server's text goes to terminals and logs)."""
    parsed = _error_body(body)
    if parsed is not None and parsed.error and parsed.error.strip():
        return one_line(parsed.error)
    text = one_line(body[:MESSAGE_PREFIX].decode("utf-8", errors="replace"))
    if len(body) > MESSAGE_PREFIX and not text.endswith("…"):
        text += "…"
    return text or "(empty body)"


#: Shorter tokens (a test's "t") are not searched for in text: they would blank out words.
MIN_REDACTED_LENGTH: Final = 6


def secret_forms(token: str) -> tuple[bytes, ...]:
    """The ways a token can appear in a server's answer: as is and percent-encoded."""
    if len(token) < MIN_REDACTED_LENGTH:
        return ()
    forms = {token.encode("utf-8"), quote(token, safe="").encode("ascii")}
    return tuple(sorted(forms, key=len, reverse=True))


def redact(data: bytes, secrets: tuple[bytes, ...]) -> bytes:
    """``data`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        if secret and secret in data:
            data = data.replace(secret, b"***")
    return data


def redact_text(text: str, secrets: tuple[bytes, ...]) -> str:
    """:func:`redact` for text."""
    for secret in secrets:
        plain = secret.decode("utf-8", errors="replace")
        if plain and plain in text:
            text = text.replace(plain, "***")
    return text


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


def decode(decoder: msgspec.json.Decoder[T], body: bytes, *, url: str | URL) -> T:
    """Decode a 200 body, or raise :class:`DecodeError` saying where and why."""
    try:
        return decoder.decode(body)
    except _BAD_JSON as exc:
        raise DecodeError(str(url), str(exc)) from exc


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``.

    ``attempt`` counts from 0 for the first retry.
    """
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return (rng or random).uniform(0.0, ceiling)
