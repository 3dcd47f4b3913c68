"""The archive database of ``kling-async sync``: ``DIR/archive.sqlite`` (stdlib ``sqlite3``).

It is the one source of truth of an archive, and meant to be queried with any SQLite tool.
All times are epoch milliseconds (UTC); ``PRAGMA user_version`` holds :data:`SCHEMA_VERSION`.

* ``works``: every work once, ``raw`` exactly as the API last sent it; ``email`` the account
  it came from (as given with ``--email``, NULL when none).
* ``media``: one row per file on disk, written only once the file is complete (``path``
  relative to DIR).
* ``runs``: one row per sync (per account with ``--all-accounts``); ``interrupted`` until the
  run ends, so a killed run stays ``interrupted``.
* ``walks``: where the walks stand, per account and content type (``''`` for none): whether
  a complete walk was recorded, the ids at the top of the last one (where the next walk can
  stop), and the checkpoint of a walk that was interrupted.

Each page's works, and the walk's checkpoint after it, are one transaction; each work's media
rows are another. The journal is WAL with ``synchronous=FULL``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from ._walk import WalkCheckpoint

__all__ = ["ARCHIVE_NAME", "SCHEMA_VERSION", "Archive", "ArchiveError", "MediaRow", "WalkState"]

ARCHIVE_NAME: Final = "archive.sqlite"
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE works(
    work_id INTEGER PRIMARY KEY,
    task_id INTEGER,
    email TEXT,
    create_time INTEGER,
    status INTEGER,
    content_type TEXT,
    type TEXT,
    prompt TEXT,
    raw TEXT NOT NULL,
    first_seen INTEGER,
    updated INTEGER
);
CREATE INDEX works_by_account_time ON works(email, create_time);
CREATE INDEX works_by_status ON works(status);
CREATE TABLE media(
    work_id INTEGER,
    file_type TEXT,
    path TEXT,
    bytes INTEGER,
    sha256 TEXT,
    fetched INTEGER,
    PRIMARY KEY (work_id, file_type)
);
CREATE TABLE runs(
    started INTEGER,
    finished INTEGER,
    new_works INTEGER,
    updated_works INTEGER,
    media_files INTEGER,
    status TEXT
);
CREATE TABLE walks(
    email TEXT NOT NULL,
    content_type TEXT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    boundary TEXT NOT NULL DEFAULT '[]',
    boundary_time INTEGER,
    head TEXT NOT NULL DEFAULT '[]',
    checkpoint TEXT,
    updated INTEGER,
    PRIMARY KEY (email, content_type)
);
"""

_IDS: Final = msgspec.json.Decoder(list[int])


class ArchiveError(Exception):
    """The archive database cannot be used (one line saying why)."""


def now_ms() -> int:
    """The local clock, epoch milliseconds (only for ``first_seen``, ``fetched``, runs)."""
    return time.time_ns() // 1_000_000


@dataclass
class WalkState:
    """What the archive knows of the walks of one account and content type.

    Attributes:
        complete: A complete walk was recorded: everything at and below ``boundary`` is
            archived.
        boundary: Ids of the first works the last complete walk handed out (the list's top
            when it began).
        boundary_time: The oldest ``createTime`` among them, for when all were deleted.
        head: Ids of the first works of the interrupted walk (its boundary once it completes).
        checkpoint: The interrupted walk's checkpoint, None when no walk is under way.
    """

    complete: bool = False
    boundary: list[int] = field(default_factory=list)
    boundary_time: int | None = None
    head: list[int] = field(default_factory=list)
    checkpoint: WalkCheckpoint | None = None


@dataclass(frozen=True)
class MediaRow:
    work_id: int
    file_type: str
    path: str
    bytes: int
    sha256: str


class WorkRow(msgspec.Struct, frozen=True, gc=False):
    work_id: int
    task_id: int | None
    email: str | None
    create_time: int | None
    status: int | None
    content_type: str | None
    type: str | None
    prompt: str | None
    raw: str


class Archive:
    """An open archive database. ``readonly`` (a dry run) opens an existing one read-only
    and never creates one; the methods that write are then not to be called."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._db: sqlite3.Connection | None = None
        try:
            if readonly:
                if not path.exists():
                    return  # a dry run of a new archive: everything is new
                # Without a WAL (the last writer closed cleanly) the file alone is the whole
                # database: opened immutable, not even a -shm file is made.
                wal = path.with_name(path.name + "-wal").exists()
                mode = "mode=ro" if wal else "immutable=1"
                db = sqlite3.connect(f"{path.absolute().as_uri()}?{mode}", uri=True)
            else:
                db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot open {path}: {exc}") from None
        self._db = db
        try:
            self._setup()
        except sqlite3.Error as exc:
            db.close()
            self._db = None
            raise ArchiveError(f"{path} is not a usable archive: {exc}") from None
        except BaseException:
            db.close()
            self._db = None
            raise

    def _setup(self) -> None:
        db = self.db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ArchiveError(
                f"{self.path} has schema {version}, newer than this kling-async's "
                f"({SCHEMA_VERSION}): upgrade kling-async"
            )
        if self.readonly:
            if version != SCHEMA_VERSION:
                raise ArchiveError(f"{self.path} is not a kling-async archive")
            return
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=10000")
        if version == 0:
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise ArchiveError(f"{self.path} is an SQLite database, but not an archive")
            db.executescript(
                f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
            )

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "archive is closed"
        return self._db

    @property
    def exists(self) -> bool:
        """Whether there is a database (False for the dry run of a new archive)."""
        return self._db is not None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- walks -------------------------------------------------------------------------

    def walk_state(self, email: str | None, content_type: str | None) -> WalkState:
        if self._db is None:
            return WalkState()
        row = self.db.execute(
            "SELECT complete, boundary, boundary_time, head, checkpoint FROM walks "
            "WHERE email = ? AND content_type = ?",
            (email or "", content_type or ""),
        ).fetchone()
        if row is None:
            return WalkState()
        try:
            ckpt = WalkCheckpoint.from_json(row[4]) if row[4] else None
            if ckpt is not None:
                ckpt.validate()
            return WalkState(
                complete=bool(row[0]),
                boundary=_IDS.decode(row[1]),
                boundary_time=row[2],
                head=_IDS.decode(row[3]),
                checkpoint=ckpt,
            )
        except (ValueError, msgspec.DecodeError) as exc:
            raise ArchiveError(f"damaged walk state in {self.path}: {exc}") from None

    def _save_walk(
        self, db: sqlite3.Connection, email: str | None, ct: str | None, **values: object
    ) -> None:
        db.execute(
            "INSERT OR IGNORE INTO walks(email, content_type) VALUES (?, ?)",
            (email or "", ct or ""),
        )
        sets = ", ".join(f"{k} = ?" for k in values)
        db.execute(
            f"UPDATE walks SET {sets}, updated = ? WHERE email = ? AND content_type = ?",
            (*values.values(), now_ms(), email or "", ct or ""),
        )

    def save_page(
        self,
        email: str | None,
        content_type: str | None,
        rows: list[WorkRow],
        checkpoint: WalkCheckpoint,
        head: list[int],
    ) -> tuple[int, int]:
        """One page: its works and the walk's checkpoint after it, in one transaction.

        Returns:
            (new works, works whose record changed).
        """
        new = changed = 0
        stamp = now_ms()
        with self.transaction() as db:
            for r in rows:
                old = db.execute("SELECT raw FROM works WHERE work_id = ?", (r.work_id,)).fetchone()
                values = (
                    r.task_id, r.email, r.create_time, r.status, r.content_type, r.type,
                    r.prompt, r.raw,
                )  # fmt: skip
                if old is None:
                    db.execute(
                        "INSERT INTO works VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (r.work_id, *values, stamp, stamp),
                    )
                    new += 1
                elif old[0] != r.raw:
                    db.execute(
                        "UPDATE works SET task_id = ?, email = ?, create_time = ?, status = ?, "
                        "content_type = ?, type = ?, prompt = ?, raw = ?, updated = ? "
                        "WHERE work_id = ?",
                        (*values, stamp, r.work_id),
                    )
                    changed += 1
            self._save_walk(
                db, email, content_type,
                checkpoint=checkpoint.to_json().decode(), head=msgspec.json.encode(head).decode(),
            )  # fmt: skip
        return new, changed

    def finish_walk(
        self, email: str | None, content_type: str | None, boundary: list[int], time_: int | None
    ) -> None:
        """A walk completed: it is the new boundary; no walk is under way."""
        with self.transaction() as db:
            self._save_walk(
                db, email, content_type,
                complete=1, boundary=msgspec.json.encode(boundary).decode(), boundary_time=time_,
                head="[]", checkpoint=None,
            )  # fmt: skip

    # -- works -------------------------------------------------------------------------

    def _filter(self, email: str | None, content_type: str | None) -> tuple[str, list[object]]:
        where, args = "email IS ?", list[object]([email])
        if content_type is not None:
            where += " AND content_type = ?"
            args.append(content_type)
        return where, args

    def known(self, ids: Iterable[int]) -> set[int]:
        """Which of ``ids`` are archived."""
        ids = list(ids)
        if self._db is None or not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT work_id FROM works WHERE work_id IN ({marks})", ids)
        return {r[0] for r in rows}

    def raws(self, ids: Iterable[int]) -> dict[int, str]:
        ids = list(ids)
        if self._db is None or not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT work_id, raw FROM works WHERE work_id IN ({marks})", ids)
        return {r[0]: r[1] for r in rows}

    def pending(self, email: str | None, content_type: str | None) -> dict[int, int | None]:
        """The works not finished (status other than 99) at the last run: id → createTime."""
        if self._db is None:
            return {}
        where, args = self._filter(email, content_type)
        rows = self.db.execute(
            f"SELECT work_id, create_time FROM works WHERE {where} AND status IS NOT 99", args
        )
        return {r[0]: r[1] for r in rows}

    def min_time(self, ids: list[int]) -> int | None:
        """The oldest ``createTime`` among ``ids``."""
        if self._db is None or not ids:
            return None
        marks = ",".join("?" * len(ids))
        row = self.db.execute(
            f"SELECT min(create_time) FROM works WHERE work_id IN ({marks})", ids
        ).fetchone()
        return row[0] if row else None

    def newest_time(self, email: str | None) -> int | None:
        if self._db is None:
            return None
        row = self.db.execute(
            "SELECT max(create_time) FROM works WHERE email IS ?", (email,)
        ).fetchone()
        return row[0] if row else None

    def missing_media(self, email: str | None, content_type: str | None) -> list[int]:
        """Finished works without media rows (the download archive's to-do), newest first."""
        if self._db is None:
            return []
        where, args = self._filter(email, content_type)
        rows = self.db.execute(
            f"SELECT work_id FROM works WHERE {where} AND status = 99 AND NOT EXISTS "
            "(SELECT 1 FROM media WHERE media.work_id = works.work_id) "
            "ORDER BY create_time DESC",
            args,
        )
        return [r[0] for r in rows]

    # -- media -------------------------------------------------------------------------

    def add_media(self, rows: list[MediaRow]) -> None:
        """A work's files, all complete on disk, in one transaction."""
        stamp = now_ms()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO media VALUES (?, ?, ?, ?, ?, ?)",
                [(r.work_id, r.file_type, r.path, r.bytes, r.sha256, stamp) for r in rows],
            )

    def media_paths(self, email: str | None, content_type: str | None) -> list[tuple[int, str]]:
        if self._db is None:
            return []
        where, args = self._filter(email, content_type)
        rows = self.db.execute(
            "SELECT m.work_id, m.path FROM media m JOIN works w USING (work_id) "
            f"WHERE {where.replace('email', 'w.email').replace('content_type', 'w.content_type')}",
            args,
        )
        return [(r[0], r[1]) for r in rows]

    def forget_media(self, work_ids: Iterable[int]) -> None:
        ids = list(work_ids)
        if not ids:
            return
        with self.transaction() as db:
            db.executemany("DELETE FROM media WHERE work_id = ?", [(i,) for i in ids])

    # -- runs and totals ---------------------------------------------------------------

    def begin_run(self) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO runs VALUES (?, NULL, 0, 0, 0, 'interrupted')", (now_ms(),)
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def end_run(self, run: int, *, new: int, updated: int, media: int, status: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished = ?, new_works = ?, updated_works = ?, "
                "media_files = ?, status = ? WHERE rowid = ?",
                (now_ms(), new, updated, media, status, run),
            )

    def totals(self) -> tuple[int, int, int]:
        """(works, media files, media bytes) in the whole archive."""
        if self._db is None:
            return 0, 0, 0
        works = self.db.execute("SELECT count(*) FROM works").fetchone()[0]
        files, nbytes = self.db.execute(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM media"
        ).fetchone()
        return works, files, nbytes
