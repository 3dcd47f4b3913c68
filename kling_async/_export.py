"""The export engine behind ``kling-async export`` (and ``kling-async demo``).

A walk with ``raw=True`` hands out each page's works exactly as the API sent them; each one
becomes a line of ``OUT`` (JSONL), written as its page arrives. Progress is made durable by a
*group commit*, about once per ``commit_interval`` seconds (default 1; 0 = after every page),
at the end, and when the export stops (an error, Ctrl-C, SIGTERM, a cancelled task):

1. ``OUT`` is flushed and fsynced: every line written so far is durable;
2. the checkpoint beside ``OUT`` (``OUT.checkpoint.json``) is replaced atomically (a temp file
   in the same directory, fsync, ``os.replace``, fsync of the directory), holding the walk's
   :class:`~kling_async.WalkCheckpoint` as of the last page written, the byte length of ``OUT``
   at that point and the export's options.

A commit happens only between pages, so the checkpoint always describes a prefix of ``OUT``
made of whole lines, and never points past bytes that are durable. A process killed at any
moment loses at most the pages written since the last commit: ``--resume`` truncates ``OUT``
to the checkpoint's length (dropping a partial line, or those pages' lines), asks those pages
again, and first re-queues the downloads of the lines already there (works whose files are
complete are skipped without a request). Each page's works are queued for download
(``--download``) as soon as its lines are written.

While it runs, an export holds an exclusive lock on ``OUT.lock`` (POSIX ``flock``, released by
the kernel if the process dies): a second export or demo of the same ``OUT`` refuses to start,
touching nothing, instead of interleaving pages with the first.

:func:`run_export_all` runs one such export per Kling account (``GET /accounts``), one after
another, into ``DIR/<email>.jsonl``, each with its own checkpoint and lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, BinaryIO, Final, Literal, Protocol

import msgspec

from ._download import DEFAULT_MIN_RATE, Downloader, DownloadStats
from ._files import LockedError, atomic_write, exclusive_lock
from ._http import BASE_URL_ENV, DEFAULT_BASE_URL, env_base_url, normalize_base_url
from ._lenient import decode_lenient
from ._progress import Progress, format_bytes, format_duration
from ._retry import DEFAULT_MAX_RETRY_AFTER
from ._session import KlingSession
from ._walk import Walk, WalkCheckpoint
from .errors import KlingError
from .models import Work

__all__ = [
    "CHECKPOINT_SUFFIX",
    "LOCK_SUFFIX",
    "AccountExport",
    "ExportConfig",
    "ExportOptions",
    "ExportResult",
    "ExportState",
    "ExportUsageError",
    "account_file_names",
    "checkpoint_path",
    "run_export",
    "run_export_all",
]

CHECKPOINT_SUFFIX: Final = ".checkpoint.json"
LOCK_SUFFIX: Final = ".lock"
#: 2: the walk's checkpoint finds its place by ids (kling-async 0.2).
STATE_VERSION: Final = 2
DEFAULT_PAGE_SIZE: Final = 40
#: The most download failures reported one by one; the rest are only counted.
MAX_REPORTED_FAILURES: Final = 20


class ExportUsageError(Exception):
    """The export cannot start as asked (exit status 2); the message says why and what to do."""


class ExportOptions(msgspec.Struct, kw_only=True):
    """What an export was started with, saved in its checkpoint (never the token)."""

    base_url: str
    email: str | None = None
    content_type: str | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    since: int | None = None
    max_items: int | None = None
    download_dir: str | None = None
    file_types: list[str] | None = None
    demo: bool = False
    """Written by ``kling-async demo``, which replaces only its own exports."""


class ExportState(msgspec.Struct, kw_only=True):
    """The checkpoint file beside ``OUT``.

    Attributes:
        version: Format version of this file.
        out_bytes: Length of ``OUT`` when it was written: whole lines, every one of them
            covered by ``walk``.
        works: Lines (works) in those bytes.
        finished: The walk reached its end; ``--resume`` has nothing left to fetch.
        options: The export's options.
        walk: Where the walk stands.
    """

    version: int = STATE_VERSION
    out_bytes: Annotated[int, msgspec.Meta(ge=0)]
    works: Annotated[int, msgspec.Meta(ge=0)]
    finished: bool = False
    options: ExportOptions
    walk: WalkCheckpoint


class _Version(msgspec.Struct):
    version: int = 1


_VERSION_DECODER: Final = msgspec.json.Decoder(_Version)
_STATE_DECODER: Final = msgspec.json.Decoder(ExportState)
_STATE_ENCODER: Final = msgspec.json.Encoder()
_WORK_DECODER: Final = msgspec.json.Decoder(Work)


@dataclass
class ExportConfig:
    """One export's settings, as the command line gives them.

    The walk-shaping options (``email``, ``content_type``, ``page_size``, ``since``,
    ``max_items``) are None when not given: a resumed export takes them from its checkpoint
    and refuses different ones.
    """

    out: str
    token: str | None = None
    base_url: str | None = None
    email: str | None = None
    content_type: str | None = None
    page_size: int | None = None
    since: int | None = None
    max_items: int | None = None
    prefetch: int | Literal["auto"] = "auto"
    resume: bool = False
    force: bool = False
    download_dir: str | None = None
    file_types: list[str] | None = None
    jobs: int = 4
    timeout: float = 30.0
    max_retries: int = 5
    backoff_base: float = 1.0
    min_rate: float = DEFAULT_MIN_RATE
    """Bytes per second a media download must average over each ``timeout`` window."""
    min_request_interval: float = 0.0
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    proxy: str | None = None
    download_limit: int | None = None
    """Download the files of at most this many works of this run (the demo's few files)."""
    commit_interval: float = 1.0
    """Seconds between group commits (fsync of ``OUT``, then the checkpoint); 0: every page."""
    demo: bool = False
    """``kling-async demo``: replace ``OUT`` only if the demo wrote it (or with ``force``)."""


@dataclass
class ExportResult:
    """What an export did, for the summary."""

    out: str
    works: int = 0
    """Works in ``OUT`` (earlier runs of a resumed export included)."""
    works_run: int = 0
    """Works written by this run."""
    pages: int = 0
    requests: int = 0
    retries: int = 0
    duplicates: int = 0
    elapsed: float = 0.0
    already_finished: bool = False
    resumed: bool = False
    download_dir: str | None = None
    downloads: DownloadStats | None = None
    drift_fields: int = 0
    """Fields of works that arrived with an unexpected type (written as sent all the same)."""


def checkpoint_path(out: str | os.PathLike[str]) -> Path:
    """``OUT.checkpoint.json``, beside ``OUT``."""
    path = Path(out)
    return path.with_name(path.name + CHECKPOINT_SUFFIX)


def lock_path(out: str | os.PathLike[str]) -> Path:
    """``OUT.lock``, beside ``OUT``."""
    path = Path(out)
    return path.with_name(path.name + LOCK_SUFFIX)


@contextlib.contextmanager
def _locked(out: Path | None) -> Iterator[None]:
    """Hold ``OUT.lock`` for the whole export; another holder means another export runs."""
    if out is None:
        yield
        return
    path = lock_path(out)
    created = not path.exists()
    try:
        with exclusive_lock(path):
            try:
                yield
            except ExportUsageError:
                # Refused before anything was written: leave no lock file behind either.
                if created:
                    with contextlib.suppress(OSError):
                        path.unlink()
                raise
    except LockedError:
        raise ExportUsageError(
            f"another export is writing {out} (it holds {path.name}); wait for it to end"
        ) from None


_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9@._+-]")


def account_file_names(emails: list[str]) -> dict[str, str]:
    """A file name stem for each account email, safe on every file system.

    Characters outside ``[A-Za-z0-9@._+-]`` become ``_`` and leading dots go. When that changed
    anything, or two emails would share a name (case aside), the stem also gets eight hex
    digits of the email's SHA-256, so names never collide.
    """
    stems: dict[str, str] = {}
    for email in emails:
        stem = _UNSAFE_NAME.sub("_", email).lstrip(".")[:150]
        stems[email] = stem
    folded: dict[str, int] = {}
    for stem in stems.values():
        folded[stem.casefold()] = folded.get(stem.casefold(), 0) + 1
    for email, stem in stems.items():
        if not stem or stem != email or folded[stem.casefold()] > 1:
            digest = hashlib.sha256(email.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            stems[email] = f"{stem}-{digest}" if stem else digest
    return stems


def load_state(path: Path) -> ExportState | None:
    """The checkpoint at ``path``, None if there is none.

    Raises:
        ExportUsageError: It exists but cannot be read.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ExportUsageError(f"cannot read the checkpoint {path}: {exc.strerror}") from None
    try:
        version = _VERSION_DECODER.decode(data).version
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ExportUsageError(f"unreadable checkpoint {path}: {exc}") from None
    if version != STATE_VERSION:
        raise ExportUsageError(
            f"checkpoint {path} has format {version}, not {STATE_VERSION} (written by another "
            "kling-async version): start the export again with --force"
        )
    try:
        state = _STATE_DECODER.decode(data)
        if state.out_bytes < 0 or state.works < 0:
            raise ValueError("negative out_bytes or works")
        state.walk.validate()
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise ExportUsageError(f"damaged checkpoint {path}: {exc}") from None
    return state


def write_state(path: Path, state: ExportState) -> None:
    """Replace the checkpoint atomically: readers (and a later run) see the old or the new."""
    atomic_write(path, _STATE_ENCODER.encode(state))


def _iter_lines(path: Path, limit: int) -> Iterator[bytes]:
    """The lines of the first ``limit`` bytes of ``path``, one at a time (bounded memory)."""
    with path.open("rb") as file:
        left = limit
        while left > 0:
            line = file.readline(left)
            if not line:
                return
            left -= len(line)
            yield line


def _open_out(path: Path, append: bool) -> BinaryIO:
    return path.open("ab" if append else "wb")


def _line(raw: msgspec.Raw) -> bytes:
    data = bytes(raw)
    # Raw CR/LF can only be whitespace between JSON tokens (inside strings they must be
    # escaped), so blanking them keeps the JSON equal and the line a line.
    if b"\n" in data or b"\r" in data:
        data = data.replace(b"\r", b" ").replace(b"\n", b" ")
    return data + b"\n"


def _lines(raws: list[msgspec.Raw]) -> bytes:
    """A page's works as JSONL: one join, unless a work holds a line break of its own."""
    if not raws:
        return b""
    data = b"\n".join(raws) + b"\n"
    if data.count(b"\n") == len(raws) and b"\r" not in data:
        return data
    return b"".join(_line(raw) for raw in raws)


def _merge_options(config: ExportConfig, state: ExportState | None) -> ExportOptions:
    """The options of this run: the command line's, checked against a checkpoint's."""
    if not config.base_url and (from_env := env_base_url()) is not None:
        try:
            normalize_base_url(from_env, name=BASE_URL_ENV)
        except ValueError as exc:
            raise ExportUsageError(str(exc)) from None
    # Absolute: a resumed export may run from another working directory.
    download_dir = str(Path(config.download_dir).absolute()) if config.download_dir else None
    if state is None:
        return ExportOptions(
            base_url=config.base_url or env_base_url() or DEFAULT_BASE_URL,
            email=config.email,
            content_type=config.content_type,
            page_size=config.page_size or DEFAULT_PAGE_SIZE,
            since=config.since,
            max_items=config.max_items,
            download_dir=download_dir,
            file_types=config.file_types,
            demo=config.demo,
        )
    saved = state.options
    for flag, given, kept in (
        ("--email", config.email, saved.email),
        ("--content-type", config.content_type, saved.content_type),
        ("--page-size", config.page_size, saved.page_size),
        ("--since", config.since, saved.since),
        ("--max-items", config.max_items, saved.max_items),
    ):
        if given is not None and given != kept:
            raise ExportUsageError(
                f"{flag} {given} differs from the checkpoint's ({kept}): a resumed export "
                "keeps its options; drop the option, or start over with --force"
            )
    return ExportOptions(
        base_url=config.base_url or env_base_url() or saved.base_url,
        email=saved.email,
        content_type=saved.content_type,
        page_size=saved.page_size,
        since=saved.since,
        max_items=saved.max_items,
        # Where the files go and which types are not part of the walk: a new value wins.
        download_dir=download_dir or saved.download_dir,
        file_types=config.file_types if config.file_types is not None else saved.file_types,
    )


def _prepare(config: ExportConfig) -> tuple[Path | None, ExportState | None]:
    """Check ``OUT`` and its checkpoint against ``--resume``/``--force``."""
    if config.out == "-":
        if config.resume:
            raise ExportUsageError("--resume needs an output file; stdout (-) cannot be resumed")
        return None, None
    out = Path(config.out)
    if out.is_dir() or not out.name:  # "." or "" has no name to put a checkpoint beside
        raise ExportUsageError(f"{config.out!r} is not a file name; give one for the JSONL")
    ckpt = checkpoint_path(out)
    exists = out.exists() and out.stat().st_size > 0
    if config.demo:
        # The demo starts over each time, but only over what it wrote itself.
        if (exists or ckpt.exists()) and not config.force:
            try:
                mine = (old := load_state(ckpt)) is not None and old.options.demo
            except ExportUsageError:
                mine = False
            if not mine:
                raise ExportUsageError(
                    f"{out} holds an export the demo did not write; choose another --out, "
                    "or replace it with --force"
                )
        return out, None
    if not config.resume:
        if exists and not config.force:
            hint = (
                "resume it with --resume"
                if ckpt.exists()
                else "choose another file, or replace it with --force"
            )
            raise ExportUsageError(f"{out} already exists; {hint}")
        return out, None
    state = load_state(ckpt)
    if state is None:
        if exists:
            raise ExportUsageError(
                f"{out} has no checkpoint ({ckpt.name}): nothing to resume; replace it with "
                "--force, or choose another file"
            )
        return out, None  # --resume of an export not begun yet starts it
    size = out.stat().st_size if out.exists() else 0
    if size < state.out_bytes:
        raise ExportUsageError(
            f"{out} is shorter ({size} bytes) than its checkpoint says ({state.out_bytes}): "
            "it was changed since; start over with --force"
        )
    return out, state


def _check_tail(out: Path, length: int) -> None:
    """The checkpointed prefix must end a line, or the checkpoint belongs to another file."""
    if length == 0:
        return
    with out.open("rb") as file:
        file.seek(length - 1)
        if file.read(1) != b"\n":
            raise ExportUsageError(
                f"{out} does not match its checkpoint (no line ends at byte {length}); "
                "start over with --force"
            )


class SessionSettings(Protocol):
    """The command-line settings a command's own session is made from."""

    token: str | None
    timeout: float
    max_retries: int
    backoff_base: float
    min_request_interval: float
    max_retry_after: float
    proxy: str | None


def api_session(
    config: SessionSettings,
    email: str | None,
    base_url: str,
    usage_error: type[Exception] = ExportUsageError,
) -> KlingSession:
    """The session a command makes from its settings (export, sync).

    Raises:
        usage_error: No token, or a setting the session refuses (exit status 2).
    """
    token = config.token or os.environ.get("USEAPI_TOKEN") or None
    if not token:
        raise usage_error("no API token: pass --token or set USEAPI_TOKEN")
    try:
        return KlingSession(
            token,
            email=email,
            base_url=base_url,
            timeout=config.timeout,
            max_retries=config.max_retries,
            backoff_base=config.backoff_base,
            min_request_interval=config.min_request_interval,
            max_retry_after=config.max_retry_after,
            proxy=config.proxy,
        )
    except ValueError as exc:
        raise usage_error(str(exc)) from None


class FailureReport:
    """Reports download failures one line each, the first few: a broken CDN could fail every
    work, and past a few lines only the summary counts them."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.reported = 0

    def __call__(self, message: str) -> None:
        self.reported += 1
        if self.reported <= MAX_REPORTED_FAILURES:
            self.progress.error(f"{self.progress.prefix}: {message}")
        elif self.reported == MAX_REPORTED_FAILURES + 1:
            self.progress.error(f"{self.progress.prefix}: more download failures; counting only")


async def run_export(
    config: ExportConfig, progress: Progress | None = None, *, kling: KlingSession | None = None
) -> ExportResult:
    """Run one export (or resume one) as ``config`` says.

    Args:
        config: The settings.
        progress: Where progress and download failures go (a quiet one when None).
        kling: A session to use (its pace and backoff then span several exports); without
            one, a session is made from ``config`` and closed at the end.

    Returns:
        What was done. ``result.downloads.failed`` counts failed downloads.

    Raises:
        ExportUsageError: The export cannot start as asked (exit status 2), or another export
            is writing ``OUT``.
        KlingError: The walk failed (after retries): the checkpoint holds what was done.
        OSError: ``OUT`` or the checkpoint could not be written.
    """
    progress = progress or Progress(quiet=True)
    out = None if config.out == "-" else Path(config.out)
    if out is not None and out.is_dir():
        raise ExportUsageError(f"{out} is a directory; give a file name for the JSONL")
    with _locked(out):
        return await _run_export(config, progress, kling)


def preflight(config: ExportConfig) -> None:
    """Refuse now what :func:`run_export` would refuse before writing anything: another export
    holding ``OUT``, an ``OUT`` that would be overwritten, a damaged checkpoint.

    Raises:
        ExportUsageError: As :func:`run_export` would, before any request.
    """
    out = None if config.out == "-" else Path(config.out)
    if out is not None and out.is_dir():
        raise ExportUsageError(f"{out} is a directory; give a file name for the JSONL")
    with _locked(out):
        _prepare(config)


async def _run_export(
    config: ExportConfig, progress: Progress, kling: KlingSession | None
) -> ExportResult:
    out, state = _prepare(config)
    options = _merge_options(config, state)
    result = ExportResult(out=config.out, resumed=state is not None)
    result.download_dir = options.download_dir
    if state is not None and out is not None:
        result.works = state.works
        _check_tail(out, state.out_bytes)
    if state is not None and state.finished and not options.download_dir:
        result.already_finished = True
        return result
    if kling is not None:
        return await _Export(config, kling, progress, out, state, options, result).run()
    own = api_session(config, options.email, options.base_url)
    own._add_announcer(progress.waiting)
    async with own:
        return await _Export(config, own, progress, out, state, options, result).run()


@contextlib.contextmanager
def _naming_errors(out: Path | None) -> Iterator[None]:
    """An error writing or syncing ``OUT`` names it (a bare ``No space left on device`` does
    not say which file); the type stays (``BrokenPipeError`` on stdout...)."""
    try:
        yield
    except OSError as exc:
        if out is None or exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(out)) from exc


class _Commit:
    """Group commit of an export: ``OUT`` fsynced, then the checkpoint replaced.

    Without ``save`` (stdout), a commit only flushes: there is nothing to make durable.
    """

    def __init__(
        self, file: BinaryIO, save: Callable[[bool], None] | None, interval: float
    ) -> None:
        self.file = file
        self.save = save
        self.interval = interval
        self.dirty = False
        self.count = 0
        self.last = time.monotonic()
        self.error: OSError | None = None

    def page_written(self) -> None:
        """After a page's lines: commit if the interval has passed (stdout: flush)."""
        if self.error is not None:
            raise self.error  # a commit between pages failed: stop, as after this page
        self.dirty = True
        if self.save is None or time.monotonic() - self.last >= self.interval:
            self.now()

    def now(self, *, finished: bool = False) -> None:
        """Make every line written so far durable, then point the checkpoint at them."""
        self.file.flush()
        if self.save is not None:
            os.fsync(self.file.fileno())
            self.save(finished)
            self.count += 1
        self.dirty = False
        self.last = time.monotonic()

    async def tick(self) -> None:
        """Commit pages still uncommitted after an interval with no new page (a slow API,
        a backoff): a kill then loses at most an interval's pages, however long the wait."""
        if self.save is None or self.interval <= 0:
            return
        while True:
            await asyncio.sleep(max(0.0, self.last + self.interval - time.monotonic()) + 0.01)
            if self.dirty and time.monotonic() - self.last >= self.interval:
                try:
                    self.now()
                except OSError as exc:  # raised with the next page (or the final commit)
                    self.error = exc
                    return


class _Export:
    """One run of the engine; :func:`run_export` builds it."""

    def __init__(
        self,
        config: ExportConfig,
        kling: KlingSession,
        progress: Progress,
        out: Path | None,
        state: ExportState | None,
        options: ExportOptions,
        result: ExportResult,
    ) -> None:
        self.config = config
        self.kling = kling
        self.progress = progress
        self.out = out
        self.state = state
        self.options = options
        self.result = result
        self.downloader: Downloader | None = None
        self.pages = 0
        self.retries = 0
        self._report = FailureReport(progress)
        self.out_bytes = 0  # length of OUT: whole lines, all covered by the walk's checkpoint
        self.commits = 0

    def _show(self, force: bool = False) -> None:
        dl = self.downloader
        self.progress.update(
            works=self.result.works_run,
            pages=self.pages,
            retries=self.retries,
            files=dl.stats.files if dl is not None else None,
            nbytes=dl.stats.bytes if dl is not None else None,
            force=force,
        )

    def _make_walk(self) -> Walk[Work]:
        options, state = self.options, self.state
        try:
            return Walk(
                self.kling,
                raw=True,
                email=options.email if options.email is not None else self.kling._email,
                page_size=options.page_size,
                content_type=options.content_type,
                start_page=1,
                since=options.since,
                max_items=options.max_items,
                max_pages=None,
                prefetch=self.config.prefetch,
                max_stale_pages=3,
                resume=state.walk if state is not None else None,
                model=Work,
                _full=False,  # lines are written as sent: decode only ids and download fields
            )
        except (ValueError, TypeError) as exc:
            if state is None or self.out is None:
                raise
            # The command line's options are checked by argparse: these come from the file.
            ckpt = checkpoint_path(self.out)
            raise ExportUsageError(
                f"damaged checkpoint {ckpt}: {exc}; start over with --force"
            ) from None

    async def run(self) -> ExportResult:
        options = self.options
        self._make_walk()  # a damaged checkpoint is refused before OUT is touched
        self.progress.restart()
        if options.download_dir:
            try:
                self.downloader = Downloader(
                    self.kling,
                    options.download_dir,
                    jobs=self.config.jobs,
                    file_types=options.file_types,
                    email=options.email,
                    timeout=self.config.timeout,
                    min_rate=self.config.min_rate,
                    on_progress=self._show,
                    on_error=self._report,
                )
                self.result.downloads = self.downloader.stats
                self.downloader.start()
            except ValueError as exc:  # file types or a path (a NUL) from a damaged checkpoint
                raise ExportUsageError(
                    f"cannot download into {options.download_dir!r}: {exc}"
                ) from None
        try:
            await self._run()
        finally:
            if self.downloader is not None:
                await self.downloader.aclose()
            self.result.elapsed = self.progress.elapsed()
        return self.result

    async def _run(self) -> None:
        state, out = self.state, self.out
        if state is not None and out is not None:
            # Drop a partial last line, or lines of a page written after the last checkpoint.
            if out.stat().st_size > state.out_bytes:
                os.truncate(out, state.out_bytes)
            if self.downloader is not None:
                await self._requeue(out, state.out_bytes)
            if state.finished:
                self.result.already_finished = True
                await self._finish_downloads()
                return
        await self._walk()
        await self._finish_downloads()

    async def _finish_downloads(self) -> None:
        if self.downloader is not None:
            await self.downloader.join()
        self._show(force=True)

    async def _requeue(self, out: Path, length: int) -> None:
        """Queue the downloads of the works already in ``OUT`` (complete ones are skipped)."""
        assert self.downloader is not None
        for line in _iter_lines(out, length):
            try:
                work = decode_lenient(line, _WORK_DECODER, Work)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                continue  # not a work this library can read: nothing to download for it
            await self.downloader.submit(work)

    async def _walk(self) -> None:
        options, state, result, out = self.options, self.state, self.result, self.out
        walk = self._make_walk()
        ckpt = checkpoint_path(out) if out is not None else None
        self.out_bytes = state.out_bytes if state is not None else 0

        def save(finished: bool) -> None:
            if ckpt is not None:
                write_state(
                    ckpt,
                    ExportState(
                        out_bytes=self.out_bytes,
                        works=result.works,
                        finished=finished,
                        options=options,
                        walk=walk.checkpoint(),
                    ),
                )

        # The first checkpoint comes before OUT is opened (and, starting over, emptied): killed
        # in between, a resume truncates OUT to 0 bytes instead of trusting an old checkpoint.
        save(False)
        with _naming_errors(out), contextlib.ExitStack() as stack:
            if out is None:
                file = sys.stdout.buffer
                commit = _Commit(file, None, self.config.commit_interval)
            else:
                file = stack.enter_context(_open_out(out, append=state is not None))
                commit = _Commit(file, save, self.config.commit_interval)
            done = False
            try:
                await self._write_pages(walk, file, commit)
                done = True
            finally:
                if not done and commit.dirty:
                    # Stopped early (an error, Ctrl-C, SIGTERM, a cancelled task): keep what
                    # was written. A failing commit (a full disk) must not hide why it stopped.
                    with contextlib.suppress(OSError):
                        commit.now()
                self.commits = commit.count
            commit.now(finished=True)
            self.commits = commit.count

    async def _write_pages(self, walk: Walk[Work], file: BinaryIO, commit: _Commit) -> None:
        """Write each page's lines, queue its downloads; commit about once per interval."""
        result = self.result
        limit = self.config.download_limit
        queued = 0
        ticker = asyncio.create_task(commit.tick())  # commits while no page arrives
        try:
            async with aclosing(walk.__aiter__()) as batches:
                async for batch in batches:
                    data = _lines(batch.raw_works)
                    file.write(data)
                    # Counted before any await: a commit between pages always sees a page's
                    # bytes and the walk's checkpoint after it together.
                    self.out_bytes += len(data)
                    result.works += len(batch.raw_works)
                    result.works_run += len(batch.raw_works)
                    commit.page_written()
                    self._sync_stats(walk.stats.pages, walk.stats.retries)
                    self._show()
                    if self.downloader is not None:
                        for work in batch.works:
                            if limit is not None and queued >= limit:
                                break
                            queued += 1
                            await self.downloader.submit(work)
        finally:
            ticker.cancel()
            await asyncio.wait([ticker])  # never raises: neither its end nor ours is hidden
            stats = walk.stats
            self._sync_stats(stats.pages, stats.retries)
            result.requests = stats.requests
            result.duplicates = stats.duplicates
            result.drift_fields = stats.drift_fields

    def _sync_stats(self, pages: int, retries: int) -> None:
        self.pages = self.result.pages = pages
        self.retries = self.result.retries = retries


def summary_lines(result: ExportResult) -> list[str]:
    """The end-of-run summary, one fact per line."""
    lines: list[str] = []
    if result.already_finished:
        lines.append(f"export already finished: {result.works:,} works in {result.out}")
    else:
        rate = result.works_run / result.elapsed if result.elapsed > 0 else 0.0
        earlier = result.works - result.works_run
        resumed = f", {earlier:,} from earlier runs" if result.resumed else ""
        lines.append(
            f"exported {result.works_run:,} works{resumed} to {result.out} in "
            f"{format_duration(result.elapsed)} ({rate:,.0f} works/s)"
        )
        lines.append(
            f"  {result.pages:,} pages, {result.requests:,} requests, {result.retries:,} "
            f"retries, {result.duplicates:,} duplicates skipped"
        )
        if result.drift_fields:
            lines.append(
                f"  {result.drift_fields:,} fields of unexpected types (written as sent; "
                "see the warnings)"
            )
    dl = result.downloads
    if dl is not None:
        lines.append(
            f"  media in {result.download_dir}: {dl.files:,} files ({format_bytes(dl.bytes)}) "
            f"from {dl.works:,} works, {dl.present:,} works already complete, "
            f"{dl.not_succeeded + dl.no_files:,} without files, {dl.retries:,} retries, "
            f"{dl.failed:,} failed"
        )
    return lines


@dataclass
class AccountExport:
    """The outcome of one account's export in :func:`run_export_all`."""

    email: str
    out: str
    result: ExportResult | None = None
    """What the export did; None when it failed before it could say."""
    error: BaseException | None = None
    """Why it failed (a ``KlingError``, an ``OSError`` or an ``ExportUsageError``)."""

    @property
    def failed(self) -> bool:
        """The export failed, or some of its downloads did."""
        downloads = self.result.downloads if self.result is not None else None
        return self.error is not None or (downloads is not None and downloads.failed > 0)


@dataclass
class AllAccountsResult:
    """What :func:`run_export_all` did, one entry per account, in the API's order."""

    directory: str
    accounts: list[AccountExport] = field(default_factory=list)

    @property
    def failed(self) -> list[AccountExport]:
        """The accounts whose export (or a download) failed."""
        return [a for a in self.accounts if a.failed]


def _check_directory(directory: Path, *, create: bool = False) -> None:
    if directory.exists() and not directory.is_dir():
        raise ExportUsageError(f"{directory} is a file; --all-accounts needs a directory")
    if create:
        directory.mkdir(parents=True, exist_ok=True)


async def run_export_all(
    config: ExportConfig,
    progress: Progress | None = None,
    *,
    on_account: Callable[[AccountExport], None] | None = None,
) -> AllAccountsResult:
    """Export every configured Kling account, one after another, into a directory.

    ``config.out`` is the directory (created if missing); account ``EMAIL`` goes to
    ``DIR/<EMAIL>.jsonl`` (see :func:`account_file_names`) with its own checkpoint and lock,
    and its media, with ``download_dir``, into ``download_dir/<EMAIL>/``. ``config.resume``
    and ``config.force`` apply to each file. One session serves every account, so the pace
    and a rate limit's backoff span them all. One account's failure is recorded and the next
    account goes on.

    Args:
        config: The settings (``email`` must be None).
        progress: Progress and messages (a quiet one when None).
        on_account: Called after each account, with its outcome.

    Raises:
        ExportUsageError: ``OUT`` is ``-`` or a file, ``email`` is set, or no token.
        KlingError: ``GET /accounts`` failed (nothing was exported).
    """
    progress = progress or Progress(quiet=True)
    if config.out == "-":
        raise ExportUsageError("--all-accounts needs a directory for OUT, not stdout (-)")
    if config.email is not None:
        raise ExportUsageError("--all-accounts exports every account: drop --email")
    directory = Path(config.out)
    _check_directory(directory)
    base_url = config.base_url or DEFAULT_BASE_URL
    kling = api_session(config, None, base_url)
    kling._add_announcer(progress.waiting)
    outcome = AllAccountsResult(directory=str(directory))
    async with kling:
        emails = list(await kling.get_accounts())
        _check_directory(directory, create=bool(emails))
        names = account_file_names(emails)
        for email in emails:
            name = names[email]
            sub = replace(
                config,
                out=str(directory / f"{name}.jsonl"),
                email=email,
                base_url=base_url,
                download_dir=str(Path(config.download_dir) / name) if config.download_dir else None,
            )
            account = AccountExport(email=email, out=sub.out)
            progress.info(f"{progress.prefix}: account {email} -> {sub.out}")
            try:
                account.result = await run_export(sub, progress, kling=kling)
            except (KlingError, OSError, ExportUsageError, RecursionError) as exc:
                # One account's failure must not lose the others' work; its checkpoint keeps
                # what it did, for --resume.
                account.error = exc
            outcome.accounts.append(account)
            if on_account is not None:
                on_account(account)
    return outcome
