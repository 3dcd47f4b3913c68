"""Media downloads for ``kling-async export --download DIR``: the watermark-free files.

Each work's files are asked of ``GET /assets/download`` and fetched from the ``cdnUrl`` it
answers, by a few workers behind a bounded queue (the export waits when the queue is full, so
memory stays bounded whatever the library's size).

The ``cdnUrl`` and a zip's contents come from hosts this library does not control, so:

* **names are ours**: a single file is ``<workId>.<ext>`` with the extension taken from the
  requested file type (never from the URL); a zip entry with the extension of a requested
  type becomes ``<workId>.<ext>``, any other entry with a whitelisted extension keeps its
  sanitised base name, prefixed with ``<workId>_`` unless it starts with the id, and the rest
  are skipped. A zip with an absolute, ``..``, drive-letter, NUL or symlink entry is refused
  whole, before anything is extracted; so is one whose entries add up to more than
  ``max_unzipped_bytes``;
* every file is written as ``NAME.part`` (created with ``O_EXCL | O_NOFOLLOW`` after
  unlinking any leftover, so a planted symlink is never written through), then renamed; a
  final name that is a symlink is refused. A work whose final files all exist is skipped,
  which is how a resumed export skips what it already has;
* the useapi token never goes to the CDN: files are fetched with
  :meth:`KlingSession.open_cdn`, which carries a User-Agent and nothing else and follows
  redirects by hand (http and https only).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import stat
import sys
import zipfile
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

import aiohttp
from yarl import URL

from ._http import FILE_TYPES, check_seconds
from .errors import KlingError, RedirectError, TransportError

if sys.version_info >= (3, 11):
    from asyncio import timeout as _deadline
else:  # aiohttp depends on async-timeout before 3.11
    from async_timeout import timeout as _deadline  # type: ignore[import-not-found,unused-ignore]

if TYPE_CHECKING:
    from ._session import KlingSession
    from .models import Work

__all__ = [
    "DEFAULT_MIN_RATE",
    "FILE_EXTENSIONS",
    "DownloadError",
    "DownloadJob",
    "DownloadStats",
    "Downloader",
    "safe_member_name",
]

FILE_EXTENSIONS: Final = {file_type: file_type.lower() for file_type in FILE_TYPES}
"""The file types ``GET /assets/download`` knows, and the extension each is saved with."""

DEFAULT_MIN_RATE: Final = 1024.0
"""Bytes per second a CDN download must average over each window of ``timeout`` seconds."""

_SAFE_EXTENSIONS: Final = frozenset(FILE_EXTENSIONS.values())
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_UNSAFE_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]")
_DRIVE: Final = re.compile(r"[A-Za-z]:")
_OUR_PART: Final = re.compile(r"[0-9]+\..*\.part")
_ZIP_MAGIC: Final = (b"PK\x03\x04", b"PK\x05\x06")
_TRANSIENT: Final = frozenset({408, 429, 500, 502, 503, 504})
_CHUNK: Final = 256 * 1024
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)  # absent on Windows
_BINARY: Final = getattr(os, "O_BINARY", 0)  # Windows only


class DownloadError(Exception):
    """One work's files could not be written; the message is one line saying why."""


class _Transient(Exception):
    """A CDN failure worth another try (connection error, timeout, 429, 5xx)."""


@dataclass(frozen=True)
class DownloadJob:
    """The files of one work to fetch.

    Attributes:
        work_id: The work.
        file_types: The file types to ask for (``MP4``, ``PNG``, ``MP3``, ``WAV``).
    """

    work_id: int
    file_types: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        """The file names the work's requested types end up with: ``<workId>.<ext>``."""
        return [f"{self.work_id}.{FILE_EXTENSIONS[t]}" for t in self.file_types]


@dataclass
class DownloadStats:
    """Counters of a :class:`Downloader`."""

    works: int = 0
    """Works whose files were all written in this run."""
    files: int = 0
    """Files written (a zip counts for each entry extracted)."""
    bytes: int = 0
    """Bytes received from the CDN."""
    present: int = 0
    """Works skipped because their files were already complete (a resumed export)."""
    not_succeeded: int = 0
    """Works skipped because their status is not 99 (still rendering, or failed)."""
    no_files: int = 0
    """Works skipped because they offer none of the wanted file types."""
    failed: int = 0
    """Works whose download failed (each reported on stderr)."""
    retries: int = 0
    """CDN requests retried after a transient failure."""
    ignored_entries: int = 0
    """Zip entries skipped for an extension outside the whitelist."""


def safe_member_name(name: str) -> str:
    """The sanitised base name of a server-given file name (a zip entry).

    Only the last path component is kept, characters outside ``[A-Za-z0-9._-]`` become
    ``_`` and leading dots are dropped.

    Raises:
        DownloadError: The name is absolute, has a drive letter, a ``..`` component or a NUL,
            or nothing is left of it: the whole zip is then refused (zip-slip).
    """
    if "\x00" in name:
        raise DownloadError(f"unsafe entry name {name!r} (NUL byte)")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        raise DownloadError(f"unsafe entry name {name!r} (absolute path)")
    parts = norm.split("/")
    if ".." in parts:
        raise DownloadError(f"unsafe entry name {name!r} (parent directory)")
    base = _UNSAFE_CHARS.sub("_", parts[-1]).lstrip(".")[:150]
    if not base:
        raise DownloadError(f"unsafe entry name {name!r} (empty)")
    return base


def _check_cdn_url(cdn_url: str | None) -> URL:
    if not cdn_url:
        raise DownloadError("the API answered without a cdnUrl")
    try:
        url = URL(cdn_url)
    except (ValueError, TypeError) as exc:
        raise DownloadError(f"unusable cdnUrl: {exc}") from None
    return url  # the scheme is checked by KlingSession.open_cdn, at every hop


def _where(url: URL) -> str:
    """The URL without its query (signed CDN URLs carry long signatures there)."""
    return str(url.with_query(None).with_fragment(None))


def _create_part(path: Path) -> BinaryIO:
    """Open ``path`` for writing as a new file, never through a symlink planted there."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o644)
    return os.fdopen(fd, "wb")


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)  # lstat: a symlink is not a finished file
    except OSError:
        return False


def _finish_file(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


class Downloader:
    """Fetch works' files into a directory with ``jobs`` workers behind a bounded queue.

    Use as ``async with Downloader(...) as dl:``, :meth:`submit` each work (it waits when the
    queue is full), then :meth:`join`. Leaving the block without :meth:`join` (an error, a
    Ctrl-C) cancels the downloads in flight and removes their ``.part`` files.

    Args:
        kling: The session: ``get_download_link`` for the links, ``open_cdn`` (no token)
            for the CDN, and its retry settings.
        directory: Where files go; created if missing.
        jobs: Works downloaded at once.
        file_types: Only these types (``MP4``, ``PNG``, ``MP3``, ``WAV``); None for every
            type a work offers.
        email: The Kling account, for ``get_download_link``; None for the session's.
        max_file_bytes: Largest body accepted from the CDN.
        max_unzipped_bytes: Largest total of a zip's uncompressed entries.
        max_entries: Most entries accepted in one zip.
        timeout: Seconds allowed to connect to the CDN and between two reads; also the
            window over which ``min_rate`` is measured.
        min_rate: Bytes per second a file must average over each ``timeout`` window, or it
            fails as too slow (and is retried like other transient failures); 0 turns the
            check off. Without it, a CDN trickling a byte now and then would never time out.
        on_progress: Called after each chunk received and each file written.
        on_error: Called with a one-line message for each failed work.
    """

    def __init__(
        self,
        kling: KlingSession,
        directory: str | os.PathLike[str],
        *,
        jobs: int = 4,
        file_types: Collection[str] | None = None,
        email: str | None = None,
        max_file_bytes: int = 8 * 1024**3,
        max_unzipped_bytes: int = 8 * 1024**3,
        max_entries: int = 1000,
        timeout: float = 30.0,
        min_rate: float = DEFAULT_MIN_RATE,
        on_progress: Callable[[], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        check_seconds("timeout", timeout, positive=True)
        if not math.isfinite(min_rate) or min_rate < 0:
            raise ValueError(f"min_rate must be a finite number >= 0, got {min_rate}")
        if file_types is not None:
            unknown = sorted(set(file_types) - FILE_EXTENSIONS.keys())
            if unknown:
                raise ValueError(f"unknown file types {unknown}; known: {list(FILE_EXTENSIONS)}")
        self._kling = kling
        self._dir = Path(directory)
        self.jobs = jobs
        self.file_types = frozenset(file_types) if file_types is not None else None
        self.email = email
        self.max_file_bytes = max_file_bytes
        self.max_unzipped_bytes = max_unzipped_bytes
        self.max_entries = max_entries
        self._on_progress = on_progress or (lambda: None)
        self._on_error = on_error or (lambda message: None)
        self.timeout = timeout
        self.min_rate = min_rate
        # No total: a big file may take long. A stall between reads, and a trickle slower
        # than min_rate (checked in _stream), are what fail.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._queue: asyncio.Queue[DownloadJob | None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.stats = DownloadStats()

    @property
    def directory(self) -> Path:
        """The resolved download directory."""
        return self._dir

    async def __aenter__(self) -> Downloader:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Create the directory, remove ``.part`` files an interrupted run left, start workers."""
        self._dir.mkdir(parents=True, exist_ok=True)
        # Resolved once: every name is then checked against this real directory.
        self._dir = self._dir.resolve()
        with os.scandir(self._dir) as entries:
            for entry in entries:
                if _OUR_PART.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False):
                    _unlink(Path(entry.path))
        self._queue = asyncio.Queue(maxsize=2 * self.jobs)
        self._workers = [asyncio.create_task(self._worker()) for _ in range(self.jobs)]

    def plan(self, work: Work) -> DownloadJob | None:
        """The job for a work, or None (counted) when it has nothing to download."""
        if work.status != 99:
            self.stats.not_succeeded += 1
            return None
        offered = work.download_info.file_types if work.download_info is not None else []
        wanted = self.file_types
        types = tuple(
            dict.fromkeys(
                t
                for t in ((ft.type or "").upper() for ft in offered)
                if t in FILE_EXTENSIONS and (wanted is None or t in wanted)
            )
        )
        if not types or work.work_id is None:
            self.stats.no_files += 1
            return None
        return DownloadJob(work.work_id, types)

    def is_complete(self, job: DownloadJob) -> bool:
        """Whether every file of ``job`` is already in the directory (as a regular file)."""
        return all(_is_regular_file(self._dir / name) for name in job.names)

    async def submit(self, work: Work) -> None:
        """Queue a work's download; waits while the queue is full. Skips (and counts) works
        with nothing to download and works whose files are already complete."""
        if self._queue is None:
            raise RuntimeError("Downloader.start() was not called")
        job = self.plan(work)
        if job is None:
            return
        if self.is_complete(job):
            self.stats.present += 1
            return
        await self._queue.put(job)

    async def join(self) -> None:
        """Wait until every queued download is done, then stop the workers."""
        if self._queue is None:
            return
        for _ in self._workers:
            await self._queue.put(None)
        await asyncio.gather(*self._workers)
        self._workers = []

    async def aclose(self) -> None:
        """Cancel the downloads in flight (their ``.part`` files are removed). Idempotent."""
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            job = await queue.get()
            if job is None:
                return
            try:
                await self.download(job)
            except Exception as exc:  # one work's failure must not end the export
                self.stats.failed += 1
                self._on_error(f"download failed for work {job.work_id}: {_describe(exc)}")

    async def download(self, job: DownloadJob) -> None:
        """Fetch one work's files now.

        Raises:
            DownloadError: The CDN answer or the zip was refused, or the fetch kept failing.
            KlingError: ``GET /assets/download`` failed.
            OSError: A file could not be written.
        """
        link = await self._kling.get_download_link(
            job.work_id, file_types=list(job.file_types), email=self.email
        )
        url = _check_cdn_url(link.cdn_url)
        single = len(job.file_types) == 1
        part = self._dir / (job.names[0] + ".part" if single else f"{job.work_id}.zip.part")
        try:
            is_zip = await self._fetch(url, part)
            if is_zip:
                written, ignored = await asyncio.to_thread(self._extract, part, job)
                self.stats.ignored_entries += ignored
            elif single:
                os.replace(part, self._target(job.names[0]))
                written = 1
            else:
                raise DownloadError(
                    f"expected a zip of {', '.join(job.file_types)}, got a single file"
                )
        finally:
            _unlink(part)
        self.stats.files += written
        self.stats.works += 1
        self._on_progress()

    # -- CDN ------------------------------------------------------------------------------

    async def _fetch(self, url: URL, part: Path) -> bool:
        """Fetch ``url`` into ``part`` with retries; return whether the body is a zip."""
        # A CDN backoff of its own: CDN files are never paced, and a slow CDN must not pause
        # the session's API requests.
        retry = self._kling._new_cdn_retry_state()
        attempt = 0
        while True:
            await retry.wait()
            try:
                return await self._fetch_once(url, part)
            except _Transient as exc:
                if attempt >= self._kling.max_retries:
                    raise DownloadError(str(exc)) from None
                delay = retry.delay(attempt, None)
                self.stats.retries += 1
                attempt += 1
                # Long waits are announced like the API's (the CLI shows them).
                self._kling._announce(
                    f"CDN error: waiting {delay:.0f} s (retry {attempt}/{self._kling.max_retries})",
                    delay,
                )
                retry.push(delay)

    async def _fetch_once(self, url: URL, part: Path) -> bool:
        try:
            async with contextlib.AsyncExitStack() as stack:
                # aiohttp's per-read timeout does not stop headers trickling in a byte at a
                # time: the answer's head gets `timeout` seconds in all.
                async with _deadline(self.timeout):
                    # KlingSession.open_cdn never sends the token, follows redirects by hand.
                    resp = await stack.enter_async_context(
                        self._kling.open_cdn(url, timeout=self._timeout)
                    )
                where = _where(resp.url)
                if resp.status in _TRANSIENT:
                    raise _Transient(f"CDN answered HTTP {resp.status} ({where})")
                if resp.status != 200:
                    raise DownloadError(f"CDN answered HTTP {resp.status} ({where})")
                length = resp.content_length
                if length is not None and length > self.max_file_bytes:
                    raise DownloadError(
                        f"file of {length} bytes exceeds the {self.max_file_bytes} limit"
                    )
                return await self._stream(resp, part)
        except RedirectError as exc:  # a URL that is not usable http(s), or too many hops
            raise DownloadError(str(exc)) from None
        except TransportError as exc:  # connection failures, timeouts, broken responses
            raise _Transient(f"CDN: {exc}") from None
        except (TimeoutError, asyncio.TimeoutError):  # _deadline; distinct types before 3.11
            raise _Transient(
                f"CDN: no response within {self.timeout:g} s ({_where(url)})"
            ) from None

    async def _stream(self, resp: aiohttp.ClientResponse, part: Path) -> bool:
        head = b""
        size = 0
        stats = self.stats
        clock = asyncio.get_running_loop().time
        window_start, window_bytes = clock(), 0
        try:
            with _create_part(part) as file:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    window_bytes += len(chunk)
                    elapsed = clock() - window_start
                    if elapsed >= self.timeout:
                        if window_bytes < self.min_rate * elapsed:
                            raise _Transient(
                                f"CDN too slow: {window_bytes} bytes in {elapsed:.1f} s, under "
                                f"the minimum rate of {self.min_rate:g} bytes/s "
                                f"({_where(resp.url)})"
                            )
                        window_start, window_bytes = clock(), 0
                    size += len(chunk)
                    if size > self.max_file_bytes:
                        raise DownloadError(f"file exceeds the {self.max_file_bytes} bytes limit")
                    if len(head) < 4:
                        head += chunk[: 4 - len(head)]
                    file.write(chunk)
                    stats.bytes += len(chunk)
                    self._on_progress()
                # fsync: a final name must mean a complete file, even after a power cut.
                await asyncio.to_thread(_finish_file, file)
        except BaseException:
            stats.bytes -= size  # counted again by the retry, if any
            raise
        return head.startswith(_ZIP_MAGIC)

    # -- files ----------------------------------------------------------------------------

    def _target(self, name: str) -> Path:
        """The final path of ``name`` in the directory, refusing anything unexpected."""
        if not _SAFE_NAME.fullmatch(name) or ".." in name:
            raise DownloadError(f"unsafe file name {name!r}")
        path = self._dir / name
        if path.is_symlink():
            raise DownloadError(f"{name} is a symbolic link in the download directory")
        if Path(os.path.realpath(path)).parent != self._dir:
            raise DownloadError(f"{name} resolves outside the download directory")
        return path

    def _plan_entries(
        self, members: list[zipfile.ZipInfo], job: DownloadJob
    ) -> list[tuple[zipfile.ZipInfo, str | None]]:
        """The final name of each entry (None: skipped), or DownloadError for the whole zip."""
        wid = str(job.work_id)
        wanted = {FILE_EXTENSIONS[t] for t in job.file_types}
        used: set[str] = set()  # lower-cased: case-insensitive file systems
        plan: list[tuple[zipfile.ZipInfo, str | None]] = []
        for info in members:
            base = safe_member_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DownloadError(f"zip entry {base!r} is a symbolic link")
            ext = base.rpartition(".")[2].lower() if "." in base else ""
            if ext not in _SAFE_EXTENSIONS:
                plan.append((info, None))
                continue
            name = f"{wid}.{ext}"
            if ext not in wanted or name.lower() in used:
                # Kept only when it starts with this work's id (and not a longer id): a hostile
                # entry named after another work can't replace that work's file.
                carries = base.startswith(wid) and not base[len(wid) : len(wid) + 1].isdigit()
                name = base if carries else f"{wid}_{base}"
                stem, _, suffix = name.rpartition(".")
                n = 1
                while name.lower() in used:
                    name = f"{stem}_{n}.{suffix}"
                    n += 1
            used.add(name.lower())
            plan.append((info, name))
        missing = [n for n in job.names if n.lower() not in used]
        if missing:
            raise DownloadError(f"the zip lacks {', '.join(missing)}")
        return plan

    def _extract(self, zip_path: Path, job: DownloadJob) -> tuple[int, int]:
        """Unpack a work's zip (in a thread); return (files written, entries ignored)."""
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = [i for i in archive.infolist() if not i.is_dir()]
                if len(members) > self.max_entries:
                    raise DownloadError(f"zip of {len(members)} entries (limit {self.max_entries})")
                declared = sum(i.file_size for i in members)
                if declared > self.max_unzipped_bytes:
                    raise DownloadError(
                        f"zip of {declared} bytes uncompressed (limit {self.max_unzipped_bytes})"
                    )
                # Every name is checked before anything is written: a hostile zip is refused
                # whole, not half extracted.
                plan = [
                    (i, n, self._target(n) if n else None)
                    for i, n in self._plan_entries(members, job)
                ]
                budget = self.max_unzipped_bytes
                written = ignored = 0
                for index, (info, _name, final) in enumerate(plan):
                    if final is None:
                        ignored += 1
                        continue
                    tmp = self._dir / f"{job.work_id}.{index}.entry.part"
                    try:
                        with archive.open(info) as src, _create_part(tmp) as dst:
                            size = 0
                            while chunk := src.read(_CHUNK):
                                size += len(chunk)
                                budget -= len(chunk)
                                # The sizes in a zip are claims: count what really comes out.
                                if size > info.file_size or budget < 0:
                                    raise DownloadError("zip entry larger than it declares")
                                dst.write(chunk)
                            _finish_file(dst)
                        os.replace(tmp, final)
                    finally:
                        _unlink(tmp)
                    written += 1
                return written, ignored
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DownloadError(f"broken zip: {exc}") from None
        except (RuntimeError, NotImplementedError) as exc:  # encrypted, unknown compression
            raise DownloadError(f"unreadable zip: {exc}") from None


def _describe(exc: Exception) -> str:
    if isinstance(exc, (DownloadError, KlingError)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
    return f"{type(exc).__name__}: {exc}"
