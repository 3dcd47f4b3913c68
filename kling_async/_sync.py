"""The sync engine behind ``kling-async sync DIR``: a browsable archive that stays up to date.

``DIR/archive.sqlite`` (:mod:`kling_async._archive`) is the one source of truth. A run:

1. **walks** the list from the top, writing each page's works and the walk's checkpoint in
   one transaction. The first walk of an account (and content type) reads the whole list;
   killed, the next run resumes it from the checkpoint kept in the database. Once a walk has
   completed, the ids of its first works are the **boundary**: everything at and below them
   is archived. A later walk stops after the first page that reaches the boundary (holds one
   of those works, or, were they all deleted, a work created before them) — and after every
   work not finished at the last run (status other than 99) that is younger than
   ``pending_max_age`` has been read again. An interrupted walk is resumed first, then a new
   one starts from the top; a walk completes only when it got that far, so the boundary
   always has the whole archive below it. This relies on the list's order being stable (a
   work never moves below works created before it) and, for deleted boundary works and for
   the pending works, on ``createTime`` decreasing down the list (see ``since``).
2. **fetches media** for every finished work that has no row in ``media`` (new works, works
   that finished since, works a killed run did not get to): through ``GET /assets/download``
   (:class:`~kling_async._download.Downloader`, the token never sent to the CDN) into a
   staging folder ``DIR/.sync-tmp``, then renamed to the ``--path-template`` path, the mtime
   set to ``createTime``, sidecars beside it, and only then its ``media`` rows committed. A
   work with media rows is never fetched again, even if its files were deleted or moved
   (``refetch_missing`` fetches those).

The decisions (where a walk stops, which works to fetch) are plain code: :class:`StopRule`
and :meth:`Archive.missing_media`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import msgspec

from ._archive import ARCHIVE_NAME, Archive, ArchiveError, MediaRow, WorkRow
from ._download import DEFAULT_MIN_RATE, FILE_EXTENSIONS, Downloader, DownloadJob, DownloadStats
from ._export import FailureReport, api_session
from ._files import LockedError, atomic_write, exclusive_lock, fsync_dir
from ._http import DEFAULT_BASE_URL, env_base_url, normalize_base_url
from ._progress import Progress
from ._retry import DEFAULT_MAX_RETRY_AFTER
from ._session import KlingSession
from ._template import DEFAULT_TEMPLATE, PathTemplate, TemplateError
from ._walk import Walk, WalkCheckpoint
from .errors import KlingError
from .models import Work

__all__ = [
    "DEFAULT_PENDING_MAX_AGE",
    "AccountSync",
    "AllAccountsSync",
    "StopRule",
    "SyncConfig",
    "SyncResult",
    "SyncUsageError",
    "run_sync",
    "run_sync_all",
    "sidecar_text",
]

DEFAULT_PENDING_MAX_AGE: Final = 7 * 86400.0
STAGING: Final = ".sync-tmp"
LOCK_NAME: Final = ARCHIVE_NAME + ".lock"
#: Names listed by a dry run.
DRY_RUN_NAMES: Final = 5
_WORK_DECODER: Final = msgspec.json.Decoder(Work)


class SyncUsageError(Exception):
    """The sync cannot start as asked (exit status 2); the message says why."""


@dataclass
class SyncConfig:
    """One sync's settings, as the command line gives them."""

    directory: str
    token: str | None = None
    base_url: str | None = None
    email: str | None = None
    content_type: str | None = None
    page_size: int = 40
    prefetch: int | Literal["auto"] = "auto"
    file_types: list[str] | None = None
    jobs: int = 4
    media: bool = True
    sidecars: bool = True
    path_template: str = DEFAULT_TEMPLATE
    refetch_missing: bool = False
    pending_max_age: float = DEFAULT_PENDING_MAX_AGE
    """Seconds: works not finished that are older than this (against the newest work's
    ``createTime``) are no longer read again."""
    dry_run: bool = False
    timeout: float = 30.0
    max_retries: int = 5
    backoff_base: float = 1.0
    min_rate: float = DEFAULT_MIN_RATE
    min_request_interval: float = 0.0
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    proxy: str | None = None


@dataclass
class SyncResult:
    """What one sync (of one account) did, for the summary."""

    directory: str
    email: str | None = None
    new_works: int = 0
    updated_works: int = 0
    media_files: int = 0
    media_bytes: int = 0
    media_works: int = 0
    """Works whose files were all fetched in this run."""
    skipped: int = 0
    """Finished works with nothing to fetch (none of the wanted file types)."""
    failed: int = 0
    """Works whose download failed (fetched again by the next run)."""
    refetch: int = 0
    """Works whose archived files were missing on disk (with ``refetch_missing``)."""
    requests: int = 0
    pages: int = 0
    walks: int = 0
    resumed: bool = False
    """An interrupted walk was resumed."""
    full_walk: bool = False
    """No complete walk was recorded: this run read the whole list (or resumed doing so)."""
    dry_run: bool = False
    would_fetch: int = 0
    """Dry run: works whose media would be fetched."""
    names: list[str] = field(default_factory=list)
    """Dry run: the first few paths media would be written to."""
    total_works: int = 0
    total_files: int = 0
    total_bytes: int = 0


@dataclass
class AccountSync:
    """The outcome of one account's sync in :func:`run_sync_all`."""

    email: str
    result: SyncResult | None = None
    error: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.result is not None and self.result.failed > 0)


@dataclass
class AllAccountsSync:
    """What :func:`run_sync_all` did, one entry per account, in the API's order."""

    directory: str
    accounts: list[AccountSync] = field(default_factory=list)

    @property
    def failed(self) -> list[AccountSync]:
        return [a for a in self.accounts if a.failed]


class StopRule:
    """Whether a sync's walk may stop after a page (plain code, no I/O).

    Args:
        boundary: Ids at the top of the last complete walk (everything from them down is
            archived); None when no complete walk was recorded (read to the end).
        boundary_time: The oldest ``createTime`` of those works: a page holding a work
            created before it is below them (when they were all deleted).
        pending: Works not finished at the last run, id → ``createTime``: the walk goes on
            until each was read again, passed, or became older than ``max_age_ms``.
        max_age_ms: How much older than the newest work a pending work may be and still be
            waited for.
        newest: The newest ``createTime`` archived so far.
    """

    def __init__(
        self,
        *,
        boundary: Collection[int] | None,
        boundary_time: int | None = None,
        pending: Mapping[int, int | None] | None = None,
        max_age_ms: int = int(DEFAULT_PENDING_MAX_AGE * 1000),
        newest: int | None = None,
    ) -> None:
        self.boundary = set(boundary) if boundary is not None else None
        self.boundary_time = boundary_time
        # Works without a createTime cannot be placed: read again only when met.
        self.pending = {w: t for w, t in (pending or {}).items() if t is not None}
        self.max_age_ms = max_age_ms
        self.newest = newest
        self.reached = False
        self._prune()

    def _prune(self) -> None:
        if self.newest is not None:
            floor = self.newest - self.max_age_ms
            self.pending = {w: t for w, t in self.pending.items() if t >= floor}

    def after_page(self, ids: Sequence[int], times: Sequence[int | None]) -> bool:
        """Feed a page (every work on it, in list order); True: stop after it."""
        known = [t for t in times if t is not None]
        for wid in ids:
            self.pending.pop(wid, None)
        if known:
            top, lowest = max(known), min(known)
            self.newest = top if self.newest is None else max(self.newest, top)
            # Created after the page's oldest work yet not met: deleted (or moved), not below.
            self.pending = {w: t for w, t in self.pending.items() if t <= lowest}
            self._prune()
            if (
                self.boundary is not None
                and self.boundary_time is not None
                and lowest < self.boundary_time
            ):
                self.reached = True
        if self.boundary is not None and not self.boundary.isdisjoint(ids):
            self.reached = True
        return self.reached and not self.pending


def sidecar_text(work: Work) -> str:
    """The ``NAME.txt`` sidecar: prompt, negative prompt, model version, type, created, id."""
    info = work.task_info
    created = work.created_at

    def arg(name: str) -> str:
        value = info.argument(name) if info is not None else None
        return value if value is not None else ""

    lines = [
        f"prompt: {arg('prompt')}",
        f"negative prompt: {arg('negative_prompt')}",
        f"model version: {arg('kling_version') or arg('model_name') or arg('version')}",
        f"type: {work.type or ''}",
        f"created: {created.isoformat().replace('+00:00', 'Z') if created else ''}",
        f"work id: {work.work_id}",
    ]
    # Prompts may hold line breaks: each field stays on its line.
    return "".join(" ".join(line.splitlines()) + "\n" for line in lines)


def _row(work: Work, raw: msgspec.Raw, email: str | None) -> WorkRow:
    assert work.work_id is not None  # the walk refuses works without an id
    return WorkRow(
        work_id=work.work_id,
        task_id=work.task_id,
        email=email,
        create_time=work.create_time,
        status=work.status,
        content_type=work.content_type,
        type=work.type,
        prompt=work.prompt,
        raw=bytes(raw).decode("utf-8", "surrogatepass"),
    )


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class _ArchiveDownloader(Downloader):
    """The export's downloader, fetching into the staging folder; each finished work is
    then placed at its template path and recorded."""

    def __init__(self, run: _SyncRun, staging: Path) -> None:
        config = run.config
        super().__init__(
            run.kling,
            staging,
            jobs=config.jobs,
            file_types=config.file_types,
            email=run.email,
            timeout=config.timeout,
            min_rate=config.min_rate,
            on_progress=run.show,
            on_error=run.report,
        )
        self._run = run

    async def download(self, job: DownloadJob) -> None:
        try:
            await super().download(job)
            await self._run.place(job)
        finally:
            self._run.clear_staged(job.work_id)


class _SyncRun:
    """One account's sync in an open archive; :func:`run_sync` and :func:`run_sync_all`
    build it."""

    def __init__(
        self,
        config: SyncConfig,
        kling: KlingSession,
        archive: Archive,
        template: PathTemplate,
        progress: Progress,
        email: str | None,
    ) -> None:
        self.config = config
        self.kling = kling
        self.archive = archive
        self.template = template
        self.progress = progress
        self.email = email
        self.directory = Path(config.directory)
        self.staging = self.directory / STAGING
        self.result = SyncResult(directory=config.directory, email=email)
        self.result.dry_run = config.dry_run
        self.downloader: _ArchiveDownloader | None = None
        self.works: dict[int, tuple[Work, str]] = {}
        self.report = FailureReport(progress)
        # Dry run: what this run would have written, kept in memory.
        self._seen: dict[int, Work] = {}
        self._pages = 0

    # -- the walk ------------------------------------------------------------------------

    async def run(self) -> SyncResult:
        config, archive, result = self.config, self.archive, self.result
        run_id = None if config.dry_run else archive.begin_run()
        status = "interrupted"
        try:
            await self._walks()
            if config.media:
                await self._media()
            status = "failed" if result.failed else "ok"
        except Exception:
            status = "failed"
            raise
        finally:
            if run_id is not None:
                with contextlib.suppress(sqlite3.Error):
                    archive.end_run(
                        run_id,
                        new=result.new_works,
                        updated=result.updated_works,
                        media=result.media_files,
                        status=status,
                    )
            if archive.exists:
                result.total_works, result.total_files, result.total_bytes = archive.totals()
        return result

    async def _walks(self) -> None:
        state = self.archive.walk_state(self.email, self.config.content_type)
        self.result.full_walk = not state.complete
        if state.checkpoint is not None:
            self.result.resumed = True
            await self._walk(state.checkpoint, state.head)
            state = self.archive.walk_state(self.email, self.config.content_type)
            if self.config.dry_run:
                return  # nothing recorded: the walk from the top would be the same walk
        await self._walk(None, [])

    def _stop_rule(self) -> StopRule:
        config, archive = self.config, self.archive
        state = archive.walk_state(self.email, config.content_type)
        pending = archive.pending(self.email, config.content_type)
        return StopRule(
            boundary=state.boundary if state.complete else None,
            boundary_time=state.boundary_time,
            pending=pending,
            max_age_ms=int(config.pending_max_age * 1000),
            newest=archive.newest_time(self.email),
        )

    def _make_walk(self, resume: WalkCheckpoint | None) -> Walk[Work]:
        config = self.config
        try:
            return self.kling.walk(
                raw=True,
                email=self.email,
                page_size=config.page_size,
                content_type=config.content_type,
                prefetch=config.prefetch,
                resume=resume,
            )
        except (ValueError, TypeError) as exc:
            raise ArchiveError(f"damaged walk checkpoint in the archive: {exc}") from None

    async def _walk(self, resume: WalkCheckpoint | None, head: list[int]) -> None:
        config, archive, result = self.config, self.archive, self.result
        rule = self._stop_rule()
        walk = self._make_walk(resume)
        result.walks += 1
        head = list(head)
        try:
            async with aclosing(walk.__aiter__()) as batches:
                async for batch in batches:
                    if not head:
                        head = [w.work_id for w in batch.works if w.work_id is not None]
                    rows = [
                        _row(w, r, self.email)
                        for w, r in zip(batch.works, batch.raw_works, strict=True)
                    ]
                    if config.dry_run:
                        self._count_dry(rows, batch.works)
                    else:
                        new, changed = archive.save_page(
                            self.email, config.content_type, rows, walk.checkpoint(), head
                        )
                        result.new_works += new
                        result.updated_works += changed
                    page_works = batch.page.works()
                    if rule.after_page(
                        [w.work_id for w in page_works if w.work_id is not None],
                        [w.create_time for w in page_works],
                    ):
                        walk.stop()
                    self._pages += 1
                    self.show()
        finally:
            result.requests += walk.stats.requests
            result.pages += walk.stats.pages
        if walk.finished and not config.dry_run:
            state = archive.walk_state(self.email, config.content_type)
            boundary = head or state.boundary
            when = archive.min_time(head) if head else state.boundary_time
            archive.finish_walk(self.email, config.content_type, boundary, when)

    def _count_dry(self, rows: list[WorkRow], works: list[Work]) -> None:
        old = self.archive.raws(r.work_id for r in rows)
        for row, work in zip(rows, works, strict=True):
            if row.work_id not in old:
                self.result.new_works += 1
            elif old[row.work_id] != row.raw:
                self.result.updated_works += 1
            self._seen[row.work_id] = work

    def show(self, force: bool = False) -> None:
        dl = self.downloader
        self.progress.update(
            works=self.result.new_works + self.result.updated_works,
            pages=self._pages,
            retries=0,
            files=dl.stats.files if dl is not None else None,
            nbytes=dl.stats.bytes if dl is not None else None,
            force=force,
        )

    # -- media ---------------------------------------------------------------------------

    def _todo(self) -> list[int]:
        """Finished works without media, newest first (in a dry run, as if saved)."""
        config, archive = self.config, self.archive
        todo = archive.missing_media(self.email, config.content_type)
        if config.dry_run:
            have = set(todo)
            with_media = {w for w, _ in archive.media_paths(self.email, config.content_type)}
            for wid, work in self._seen.items():
                if wid in have:
                    if work.status != 99:
                        todo.remove(wid)
                elif work.status == 99 and wid not in with_media:
                    todo.append(wid)
        return todo

    def _load(self, ids: list[int]) -> list[tuple[Work, str]]:
        out: list[tuple[Work, str]] = []
        raws = self.archive.raws(ids)
        for wid in ids:
            seen = self._seen.get(wid)
            raw = raws.get(wid)
            if seen is not None:
                out.append((seen, raw or ""))
                continue
            if raw is None:
                continue
            try:
                out.append((_WORK_DECODER.decode(raw), raw))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # not a work this library can read: nothing to fetch for it
        return out

    def _refetch_missing(self) -> list[int]:
        missing = sorted(
            {
                wid
                for wid, path in self.archive.media_paths(self.email, self.config.content_type)
                if not (self.directory / path).is_file()
            }
        )
        self.result.refetch = len(missing)
        if not self.config.dry_run:
            self.archive.forget_media(missing)
        return missing

    async def _media(self) -> None:
        config, result = self.config, self.result
        refetch = self._refetch_missing() if config.refetch_missing else []
        todo = self._todo()
        if config.dry_run:  # nothing was forgotten: count what would be
            known = set(todo)
            todo += [wid for wid in refetch if wid not in known]
        if config.dry_run:
            self._dry_media(todo)
            return
        if not todo:
            return
        downloader = _ArchiveDownloader(self, self.staging)
        self.downloader = downloader
        downloader.start()
        try:
            for start in range(0, len(todo), 200):
                for work, raw in self._load(todo[start : start + 200]):
                    assert work.work_id is not None
                    self.works[work.work_id] = (work, raw)
                    await downloader.submit(work)
            await downloader.join()
        finally:
            await downloader.aclose()
            stats: DownloadStats = downloader.stats
            result.media_files += stats.files
            result.media_bytes += stats.bytes
            result.media_works += stats.works
            result.failed += stats.failed
            result.skipped += stats.no_files + stats.not_succeeded
            self.show(force=True)

    def _dry_media(self, todo: list[int]) -> None:
        wanted = set(self.config.file_types) if self.config.file_types else None
        result = self.result
        for work, _raw in self._load(todo):
            offered = [
                (ft.type or "").upper()
                for ft in (work.download_info.file_types if work.download_info else [])
            ]
            types = [t for t in dict.fromkeys(offered) if t in FILE_EXTENSIONS]
            types = [t for t in types if wanted is None or t in wanted]
            if not types:
                result.skipped += 1
                continue
            result.would_fetch += 1
            if len(result.names) < DRY_RUN_NAMES:
                try:
                    name = self.template.render(work, self.email)
                except TemplateError as exc:
                    name = f"(no name: {exc})"
                result.names.append(f"{name}.{FILE_EXTENSIONS[types[0]]}")

    def clear_staged(self, work_id: int) -> None:
        """Remove what a work left in the staging folder (extra zip entries, a failure's)."""
        self.works.pop(work_id, None)
        prefixes = (f"{work_id}.", f"{work_id}_")
        with contextlib.suppress(FileNotFoundError), os.scandir(self.staging) as entries:
            for entry in entries:
                if entry.name.startswith(prefixes) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

    async def place(self, job: DownloadJob) -> None:
        """Move a work's fetched files to their template path, write its sidecars, then
        record them (only once every file is complete where the row says)."""
        work, raw = self.works[job.work_id]
        rel = self.template.render(work, self.email)
        rows = await asyncio.to_thread(self._place_files, job, work, raw, rel)
        self.archive.add_media(rows)

    def _place_files(self, job: DownloadJob, work: Work, raw: str, rel: str) -> list[MediaRow]:
        """The file side of :meth:`place`, in a thread."""
        root = Path(os.path.realpath(self.directory))
        base = self.directory / rel
        final_dir = base.parent
        final_dir.mkdir(parents=True, exist_ok=True)
        real = os.path.realpath(final_dir)
        if os.path.commonpath([real, root]) != str(root):
            raise TemplateError(f"{final_dir} resolves outside {self.directory}")
        mtime = work.create_time * 1_000_000 if work.create_time is not None else None
        if self.config.sidecars:
            for suffix, data in ((".json", raw.encode()), (".txt", sidecar_text(work).encode())):
                tmp = self.staging / f"{job.work_id}.sidecar{suffix}"
                atomic_write(tmp, data)
                if mtime is not None:
                    os.utime(tmp, ns=(mtime, mtime))
                os.replace(tmp, base.with_name(base.name + suffix))
        rows: list[MediaRow] = []
        for file_type in job.file_types:
            ext = FILE_EXTENSIONS[file_type]
            staged = self.staging / f"{job.work_id}.{ext}"
            final = base.with_name(f"{base.name}.{ext}")
            size, digest = _hash_file(staged)
            if mtime is not None:
                os.utime(staged, ns=(mtime, mtime))
            if final.is_symlink():
                raise TemplateError(f"{final} is a symbolic link")
            os.replace(staged, final)
            rows.append(MediaRow(job.work_id, file_type, f"{rel}.{ext}", size, digest))
        fsync_dir(final_dir)
        return rows


def _session(config: SyncConfig, email: str | None) -> KlingSession:
    base_url = config.base_url or env_base_url() or DEFAULT_BASE_URL
    try:
        normalize_base_url(base_url)
    except ValueError as exc:
        raise SyncUsageError(str(exc)) from None
    return api_session(config, email, base_url, SyncUsageError)


def _check(config: SyncConfig) -> PathTemplate:
    """Everything refusable before a request: the template, DIR, the options."""
    try:
        template = PathTemplate(config.path_template)
    except TemplateError as exc:
        raise SyncUsageError(str(exc)) from None
    directory = Path(config.directory)
    if not config.directory or (directory.exists() and not directory.is_dir()):
        raise SyncUsageError(f"{config.directory!r} is not a directory")
    if config.file_types is not None:
        unknown = sorted(set(config.file_types) - FILE_EXTENSIONS.keys())
        if unknown:
            raise SyncUsageError(f"unknown file types {unknown}")
    return template


@contextlib.contextmanager
def _opened(config: SyncConfig) -> Iterator[Archive]:
    """DIR locked (not in a dry run, which writes nothing), the archive open, staging clean."""
    directory = Path(config.directory)
    if config.dry_run:
        archive = _open_archive(directory / ARCHIVE_NAME, readonly=True)
        try:
            yield archive
        finally:
            archive.close()
        return
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(directory / LOCK_NAME):
            # The lock is ours: what a killed run left in staging is garbage.
            shutil.rmtree(directory / STAGING, ignore_errors=True)
            archive = _open_archive(directory / ARCHIVE_NAME, readonly=False)
            try:
                yield archive
            finally:
                archive.close()
                with contextlib.suppress(OSError):
                    (directory / STAGING).rmdir()  # only when empty: a browsable DIR
    except LockedError:
        raise SyncUsageError(
            f"another sync is updating {directory} (it holds {LOCK_NAME}); wait for it to end"
        ) from None


def _open_archive(path: Path, *, readonly: bool) -> Archive:
    try:
        return Archive(path, readonly=readonly)
    except ArchiveError as exc:
        raise SyncUsageError(str(exc)) from None


async def run_sync(
    config: SyncConfig, progress: Progress | None = None, *, kling: KlingSession | None = None
) -> SyncResult:
    """Bring the archive in ``config.directory`` up to date with one Kling account.

    Args:
        config: The settings.
        progress: Progress and download failures (a quiet one when None).
        kling: A session to use; without one, one is made from ``config`` and closed.

    Returns:
        What was done; ``result.failed`` counts failed downloads.

    Raises:
        SyncUsageError: The sync cannot start as asked (exit status 2), or another sync is
            updating the directory.
        KlingError: The walk failed (after retries): every page before it is archived.
        OSError, sqlite3.Error: A file or the database could not be written.
    """
    progress = progress or Progress(quiet=True)
    template = _check(config)
    own = _session(config, config.email) if kling is None else None
    with _opened(config) as archive:
        if own is None:
            assert kling is not None
            return await _SyncRun(config, kling, archive, template, progress, config.email).run()
        own._add_announcer(progress.waiting)
        async with own:
            return await _SyncRun(config, own, archive, template, progress, config.email).run()


async def run_sync_all(
    config: SyncConfig,
    progress: Progress | None = None,
    *,
    on_account: Callable[[AccountSync], None] | None = None,
) -> AllAccountsSync:
    """Sync every Kling account (``GET /accounts``) into the one archive, one after another.

    Each work's ``email`` column says its account. One account's failure is recorded and the
    next goes on (what it archived stays).

    Raises:
        SyncUsageError: As :func:`run_sync`, or ``email`` is set.
        KlingError: ``GET /accounts`` failed (nothing was synced).
    """
    progress = progress or Progress(quiet=True)
    if config.email is not None:
        raise SyncUsageError("--all-accounts syncs every account: drop --email")
    template = _check(config)
    kling = _session(config, None)
    kling._add_announcer(progress.waiting)
    outcome = AllAccountsSync(directory=config.directory)
    # The lock first: a second sync refuses before asking anything.
    with _opened(config) as archive:
        async with kling:
            emails = list(await kling.get_accounts())
            for email in emails:
                account = AccountSync(email=email)
                progress.info(f"{progress.prefix}: account {email}")
                try:
                    run = _SyncRun(config, kling, archive, template, progress, email)
                    account.result = await run.run()
                except (KlingError, OSError, sqlite3.Error, ArchiveError, RecursionError) as exc:
                    # One account's failure must not lose the others' work.
                    account.error = exc
                outcome.accounts.append(account)
                if on_account is not None:
                    on_account(account)
    return outcome
