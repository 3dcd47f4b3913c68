"""kling-async sync against the fake server: incremental runs, pending works, kill -9,
the download archive, dry runs, the lock, several accounts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from kling_async import cli
from kling_async._files import exclusive_lock
from kling_async._sync import SyncConfig, SyncUsageError, run_sync, run_sync_all
from kling_async.errors import ServerError
from kling_async.testing import FakeKlingServer

from .test_cli_export import expected_works, spawn, wait_until

TOKEN = "sk-sync-test-5e1d0b"


def config(server: FakeKlingServer, directory: Path, **kw: Any) -> SyncConfig:
    kw.setdefault("prefetch", 0)
    kw.setdefault("page_size", 10)
    return SyncConfig(
        directory=str(directory),
        token=server.token,
        base_url=server.base_url,
        backoff_base=0.0,
        **kw,
    )


def on_page(server: FakeKlingServer, page_num: int, size: int = 10) -> list[int]:
    """The work ids on a page of the fake library."""
    history = server.library.page(page_num, size)["history"]
    return [w["workId"] for item in history for w in item["works"]]


def finish_all(server: FakeKlingServer, email: str | None = None) -> None:
    """Every work of the library succeeded: no pending work to re-read."""
    for w in expected_works(server.library_for(email), 40):
        if w["status"] != 99:
            server.set_status(w["workId"], 99)


def archived(directory: Path) -> dict[int, dict[str, Any]]:
    db = sqlite3.connect(directory / "archive.sqlite")
    try:
        rows = db.execute("SELECT work_id, raw FROM works").fetchall()
    finally:
        db.close()
    return {wid: json.loads(raw) for wid, raw in rows}


def run_statuses(directory: Path) -> list[str]:
    db = sqlite3.connect(directory / "archive.sqlite")
    try:
        return [r[0] for r in db.execute("SELECT status FROM runs ORDER BY rowid")]
    finally:
        db.close()


def media(directory: Path) -> dict[tuple[int, str], tuple[str, int, str]]:
    db = sqlite3.connect(directory / "archive.sqlite")
    try:
        rows = db.execute("SELECT work_id, file_type, path, bytes, sha256 FROM media").fetchall()
    finally:
        db.close()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def check_media_complete(server: FakeKlingServer, directory: Path) -> None:
    """Every finished work has its files, each complete where its row says."""
    works = archived(directory)
    rows = media(directory)
    for wid, work in works.items():
        if work["status"] != 99:
            continue
        for ft in work["downloadInfo"]["fileTypes"]:
            key = (wid, ft["type"])
            assert key in rows, f"no media row for {key}"
    for (wid, ft), (path, size, _sha) in rows.items():
        data = (directory / path).read_bytes()
        assert data == server.file_bytes(wid, ft) and len(data) == size
    leftovers = [p for p in directory.rglob("*") if p.name.endswith((".part", ".tmp"))]
    assert not leftovers


async def test_first_sync_archives_everything_with_media_and_sidecars(tmp_path: Path) -> None:
    """Every work once, raw as the API sent it; files at the template path with the work's
    createTime as mtime, sidecars beside them; one 'ok' run."""
    async with FakeKlingServer(tasks=45, token=TOKEN, seed=3) as server:
        expected = {w["workId"]: w for w in expected_works(server.library, 40)}
        result = await run_sync(config(server, tmp_path))
        assert result.new_works == len(expected) and result.failed == 0
        assert archived(tmp_path) == expected
        check_media_complete(server, tmp_path)
    rows = media(tmp_path)
    (wid, _ft), (path, _size, _sha) = next(iter(rows.items()))
    file = tmp_path / path
    assert os.stat(file).st_mtime_ns == expected[wid]["createTime"] * 1_000_000
    stem = file.with_suffix("")
    assert json.loads(stem.with_name(stem.name + ".json").read_bytes()) == expected[wid]
    txt = stem.with_name(stem.name + ".txt").read_text()
    assert f"work id: {wid}" in txt and "prompt: " in txt
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT new_works, status FROM runs").fetchall() == [
            (len(expected), "ok")
        ]
    finally:
        db.close()


async def test_later_syncs_fetch_only_what_changed(tmp_path: Path) -> None:
    """Nothing changed: one request. New works and works that finished since: exactly those,
    their media fetched once they succeed."""
    async with FakeKlingServer(tasks=60, token=TOKEN, seed=5) as server:
        finish_all(server)
        first = await run_sync(config(server, tmp_path))
        assert first.new_works == len(archived(tmp_path))

        server.reset_stats()
        same = await run_sync(config(server, tmp_path))
        assert (same.new_works, same.updated_works, same.media_files) == (0, 0, 0)
        assert server.stats.requests == 1 and same.requests == 1

        pending = server.insert_tasks(2, pending=True)
        fresh = server.insert_tasks(3)
        server.reset_stats()
        second = await run_sync(config(server, tmp_path))
        assert second.new_works == len(pending) + len(fresh)
        assert server.stats.requests <= 2
        rows = media(tmp_path)
        assert all((wid, ft) not in rows for wid in pending for ft in ("MP4", "PNG", "MP3"))
        assert {wid for wid, _ in rows} >= set(fresh)

        server.complete_pending()
        server.reset_stats()
        third = await run_sync(config(server, tmp_path))
        assert third.new_works == 0 and third.updated_works == len(pending)
        assert {wid for wid, _ in media(tmp_path)} >= set(pending)
        assert server.stats.requests <= 2 and server.stats.cdn_auth_requests == 0
        check_media_complete(server, tmp_path)

        server.reset_stats()
        again = await run_sync(config(server, tmp_path))
        assert (again.new_works, again.updated_works, again.media_files) == (0, 0, 0)
        assert server.stats.requests == 1


async def test_unfinished_work_deep_down_is_read_again_until_it_succeeds(tmp_path: Path) -> None:
    """The walk goes down to the oldest unfinished work, no deeper; past --pending-max-age
    it is no longer waited for."""
    async with FakeKlingServer(tasks=50, token=TOKEN, seed=6) as server:
        finish_all(server)
        deep = on_page(server, 3)[0]
        server.set_status(deep, 5)
        await run_sync(config(server, tmp_path))
        assert archived(tmp_path)[deep]["status"] == 5

        server.reset_stats()
        stays = await run_sync(config(server, tmp_path))  # still rendering: read, unchanged
        assert stays.updated_works == 0
        assert server.stats.pages == [1, 2, 3]

        server.set_status(deep, 99)
        server.reset_stats()
        done = await run_sync(config(server, tmp_path))
        assert done.updated_works == 1 and done.media_files >= 1
        assert server.stats.pages == [1, 2, 3]
        assert archived(tmp_path)[deep]["status"] == 99
        server.reset_stats()
        await run_sync(config(server, tmp_path))
        assert server.stats.pages == [1]

        other = on_page(server, 4)[0]
        server.set_status(other, 5)  # changed behind the archive's back: never re-read
        server.reset_stats()
        await run_sync(config(server, tmp_path))
        assert server.stats.pages == [1]


async def test_pending_max_age_bounds_the_walk(tmp_path: Path) -> None:
    async with FakeKlingServer(tasks=50, token=TOKEN, seed=6) as server:
        finish_all(server)
        deep = on_page(server, 3)[0]
        server.set_status(deep, 5)
        await run_sync(config(server, tmp_path))
        server.reset_stats()
        await run_sync(config(server, tmp_path, pending_max_age=60.0))  # a task a minute
        assert server.stats.pages == [1]


async def test_deleted_media_file_is_not_fetched_again(tmp_path: Path) -> None:
    """The media table is the download archive: a user's deletion is respected, unless
    --refetch-missing."""
    async with FakeKlingServer(tasks=12, token=TOKEN, seed=7) as server:
        finish_all(server)
        await run_sync(config(server, tmp_path))
        (wid, ft), (path, _, _) = next(iter(media(tmp_path).items()))
        (tmp_path / path).unlink()
        server.reset_stats()
        again = await run_sync(config(server, tmp_path))
        assert again.media_files == 0 and server.stats.downloads == 0
        assert not (tmp_path / path).exists()
        dry = await run_sync(config(server, tmp_path, refetch_missing=True, dry_run=True))
        assert dry.refetch == 1 and dry.would_fetch == 1
        back = await run_sync(config(server, tmp_path, refetch_missing=True))
        assert back.refetch == 1 and back.media_files >= 1
        assert (tmp_path / path).read_bytes() == server.file_bytes(wid, ft)


async def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    """Counts and a few names, no file, no database, not even on a new DIR."""
    new_dir = tmp_path / "new"
    async with FakeKlingServer(tasks=20, token=TOKEN, seed=8) as server:
        finish_all(server)
        dry = await run_sync(config(server, new_dir, dry_run=True))
        assert not new_dir.exists()
        assert dry.new_works == len(expected_works(server.library)) and dry.would_fetch > 0
        assert len(dry.names) == 5 and all("/" in n for n in dry.names)

        await run_sync(config(server, tmp_path / "a"))
        server.insert_tasks(4)
        before = {p: p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
        dry = await run_sync(config(server, tmp_path / "a", dry_run=True))
        assert dry.new_works > 0 and dry.would_fetch > 0
        after = {p: p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
        assert after == before
        real = await run_sync(config(server, tmp_path / "a"))
        assert real.new_works == dry.new_works and real.media_works == dry.would_fetch


async def test_template_is_checked_before_any_request(tmp_path: Path) -> None:
    async with FakeKlingServer(tasks=5, token=TOKEN) as server:
        args = ["sync", str(tmp_path), "--base-url", server.base_url, "--token", TOKEN, "-q"]
        code = await asyncio.to_thread(cli.main, [*args, "--path-template", "../{work_id}"])
        assert code == 2 and server.stats.requests == 0
        assert not (tmp_path / "archive.sqlite").exists()


async def test_prompt_template_with_hostile_prompts_stays_inside(tmp_path: Path) -> None:
    """Long, non-ASCII prompts: every file inside DIR, every name within 255 bytes."""
    async with FakeKlingServer(tasks=30, token=TOKEN, seed=9, non_ascii=1.0) as server:
        finish_all(server)
        await run_sync(
            config(server, tmp_path / "a", path_template="{content_type}/{prompt}_{work_id}")
        )
    root = (tmp_path / "a").resolve()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) > 30
    for p in files:
        assert p.resolve().is_relative_to(root)
        assert all(len(part.encode()) <= 255 for part in p.relative_to(root).parts)


async def test_a_second_sync_refuses_at_once(tmp_path: Path) -> None:
    """The same OS lock as export: exit 2, nothing asked."""
    async with FakeKlingServer(tasks=5, token=TOKEN) as server:
        with exclusive_lock(tmp_path / "archive.sqlite.lock"):
            code, _, err = await run_cli(server, tmp_path)
        assert code == 2 and "another sync" in err and server.stats.requests == 0
        assert err.count("\n") == 1
        with exclusive_lock(tmp_path / "archive.sqlite.lock"):
            for run in (run_sync, run_sync_all):
                with pytest.raises(SyncUsageError, match="another sync"):
                    await run(config(server, tmp_path))  # type: ignore[operator]
        assert server.stats.requests == 0 and server.stats.accounts_requests == 0


async def run_cli(server: FakeKlingServer, directory: Path, *extra: str) -> tuple[int, str, str]:
    proc = await spawn(
        "sync", str(directory), "--base-url", server.base_url, "--token", TOKEN, "-q", *extra
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def works_in_db(directory: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{directory / 'archive.sqlite'}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        return int(db.execute("SELECT count(*) FROM works").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def media_in_db(directory: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{directory / 'archive.sqlite'}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        return int(db.execute("SELECT count(*) FROM media").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


@pytest.mark.parametrize("when", ["mid-walk", "mid-media"])
async def test_kill_9_then_sync_again_is_exact(tmp_path: Path, when: str) -> None:
    """SIGKILL during the walk or the downloads, works arriving and finishing meanwhile,
    then sync: every work once, each row's file complete, every finished work's media."""
    async with FakeKlingServer(tasks=150, token=TOKEN, seed=12, latency=0.02) as server:
        finish_all(server)
        proc = await spawn(
            "sync", str(tmp_path), "--base-url", server.base_url, "--token", TOKEN,
            "--page-size", "10", "--prefetch", "1", "--jobs", "2", "-q",
        )  # fmt: skip
        try:
            if when == "mid-walk":
                await wait_until(lambda: works_in_db(tmp_path) >= 100, timeout=60)
            else:
                await wait_until(lambda: media_in_db(tmp_path) >= 20, timeout=60)
        finally:
            proc.kill()
            await proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        total = len(expected_works(server.library, 40))
        if when == "mid-walk":
            assert works_in_db(tmp_path) < total, "the walk finished before the kill"
        else:
            assert media_in_db(tmp_path) < total, "the downloads finished before the kill"
        server.insert_tasks(5)
        pending = server.insert_tasks(2, pending=True)
        code, out, err = await run_cli(server, tmp_path)
        assert code == 0, err
        server.complete_pending()
        code, out, err = await run_cli(server, tmp_path)
        assert code == 0, err
        expected = {w["workId"]: w for w in expected_works(server.library, 40)}
        assert archived(tmp_path) == expected
        assert set(pending) <= {wid for wid, _ in media(tmp_path)}
        check_media_complete(server, tmp_path)
        assert run_statuses(tmp_path) == ["interrupted", "ok", "ok"]
    assert TOKEN not in out + err


async def test_cli_summary_and_exit_status(tmp_path: Path) -> None:
    async with FakeKlingServer(tasks=8, token=TOKEN, seed=2) as server:
        finish_all(server)
        code, out, err = await run_cli(server, tmp_path)
        assert code == 0, err
        assert "new works" in out and "archive" in out and "media files" in out
        code, out, _ = await run_cli(server, tmp_path, "--dry-run")
        assert code == 0 and "dry run: 0 new works" in out
        code, _, err = await run_cli(server, tmp_path, "--token", "wrong")
        assert code == 1 and "401" in err and err.count("\n") == 1


EMAILS = ["one@example.com", "two@example.com"]


async def test_all_accounts_land_in_one_archive(tmp_path: Path) -> None:
    async with FakeKlingServer(tasks=15, token=TOKEN, seed=4, emails=EMAILS) as server:
        for email in EMAILS:
            finish_all(server, email)
        outcome = await run_sync_all(config(server, tmp_path))
        assert not outcome.failed
        per = {a.email: a.result.new_works for a in outcome.accounts if a.result}
        for email in EMAILS:
            n = len(expected_works(server.library_for(email)))
            assert per[email] == n
            db = sqlite3.connect(tmp_path / "archive.sqlite")
            try:
                got = db.execute("SELECT count(*) FROM works WHERE email = ?", (email,))
                assert got.fetchone()[0] == n
            finally:
                db.close()
        server.reset_stats()
        again = await run_sync_all(config(server, tmp_path))
        assert all(a.result and a.result.new_works == 0 for a in again.accounts)
        assert server.stats.requests == len(EMAILS)  # one page each


async def test_all_accounts_one_failure_keeps_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first account fails mid-way; the second is synced; the exit status says so."""
    from kling_async import _sync

    original = _sync._SyncRun._walks

    async def failing(self: _sync._SyncRun) -> None:
        if self.email == EMAILS[0]:
            raise ServerError(503, "down", url="http://x")
        await original(self)

    monkeypatch.setattr(_sync._SyncRun, "_walks", failing)
    async with FakeKlingServer(tasks=10, token=TOKEN, seed=4, emails=EMAILS) as server:
        outcome = await run_sync_all(config(server, tmp_path))
        assert [a.email for a in outcome.failed] == [EMAILS[0]]
        ok = outcome.accounts[1].result
        assert ok is not None and ok.new_works == len(expected_works(server.library_for(EMAILS[1])))
        db = sqlite3.connect(tmp_path / "archive.sqlite")
        try:
            assert [r[0] for r in db.execute("SELECT status FROM runs")] == ["failed", "ok"]
        finally:
            db.close()


def sidecars(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.suffix in (".json", ".txt")]


async def test_no_media_and_no_sidecars(tmp_path: Path) -> None:
    """--no-media archives the works only; a later run with media fetches them all."""
    async with FakeKlingServer(tasks=6, token=TOKEN, seed=1) as server:
        finish_all(server)
        first = await run_sync(config(server, tmp_path, media=False))
        assert first.new_works > 0 and media(tmp_path) == {} and server.stats.downloads == 0
        second = await run_sync(config(server, tmp_path, sidecars=False))
        assert second.new_works == 0 and second.media_files > 0
        check_media_complete(server, tmp_path)
        assert not sidecars(tmp_path)


@pytest.mark.parametrize("content", [b"not a database at all", None])
async def test_a_foreign_archive_file_is_refused_in_one_line(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "archive.sqlite"
    if content is None:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE mine(x)")
        db.commit()
        db.close()
    else:
        path.write_bytes(content)
    async with FakeKlingServer(tasks=3, token=TOKEN) as server:
        code, _, err = await run_cli(server, tmp_path)
        assert code == 2 and err.count("\n") == 1 and "archive" in err
        assert server.stats.requests == 0


class _Killed(Exception):
    """Stands for a kill between two page commits."""


@pytest.mark.parametrize("seed", range(6))
async def test_random_histories_of_runs_stay_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Works arriving (between runs and while pages are read), unfinished works finishing,
    tasks deleted (boundary works among them), runs cut after a random page: once a run
    completes, every work of the library is archived, as the API now sends it."""
    import random

    from kling_async import _archive
    from kling_async.testing import Faults

    rng = random.Random(seed)
    save_page = _archive.Archive.save_page
    budget: list[int | None] = [None]

    def cut(self: _archive.Archive, *args: Any, **kw: Any) -> tuple[int, int]:
        if budget[0] is not None:
            if budget[0] <= 0:
                raise _Killed
            budget[0] -= 1
        return save_page(self, *args, **kw)

    monkeypatch.setattr(_archive.Archive, "save_page", cut)
    async with FakeKlingServer(tasks=40, token=TOKEN, seed=seed) as server:
        finish_all(server)
        pending: list[int] = []
        for _ in range(20):
            action = rng.random()
            if action < 0.35:
                pending += server.insert_tasks(rng.randint(1, 12), pending=rng.random() < 0.5)
            elif action < 0.55 and pending:
                server.complete_pending()
            elif action < 0.75:
                size = len(expected_works(server.library, 40))
                server.delete_tasks(sorted(rng.sample(range(min(size, 12)), rng.randint(1, 3))))
            server.faults = Faults(inserts_per_request=rng.choice([0.0, 0.3]), seed=seed)
            budget[0] = rng.choice([None, None, 0, 1, 2, 4])
            with contextlib.suppress(_Killed):
                await run_sync(
                    config(server, tmp_path, media=False, page_size=rng.choice([2, 3, 5]))
                )
        server.faults = Faults()
        budget[0] = None
        await run_sync(config(server, tmp_path, media=False, page_size=5))
        now = {w["workId"]: w for w in expected_works(server.library, 40)}
        got = archived(tmp_path)
        assert set(now) <= set(got)
        assert {wid: got[wid] for wid in now} == now


async def test_cli_all_accounts_summary_per_account_and_in_total(tmp_path: Path) -> None:
    async with FakeKlingServer(tasks=4, token=TOKEN, seed=4, emails=EMAILS) as server:
        code, out, err = await run_cli(server, tmp_path, "--all-accounts", "--no-media")
        assert code == 0, err
        assert all(f"synced ({email})" in out for email in EMAILS)
        assert "all accounts: 2 synced into" in out
        code, _, err = await run_cli(server, tmp_path, "--all-accounts", "--email", EMAILS[0])
        assert code == 2 and err.count("\n") == 1


async def test_ctrl_c_exits_130_and_records_an_interrupted_run(tmp_path: Path) -> None:
    """SIGINT: one line, exit 130, the run row says 'interrupted'; the next run completes."""
    async with FakeKlingServer(tasks=150, token=TOKEN, seed=13, latency=0.02) as server:
        finish_all(server)
        proc = await spawn(
            "sync", str(tmp_path), "--base-url", server.base_url, "--token", TOKEN,
            "--page-size", "5", "--prefetch", "0", "--no-media", "-q",
        )  # fmt: skip
        try:
            await wait_until(lambda: works_in_db(tmp_path) >= 20, timeout=60)
            proc.send_signal(signal.SIGINT)
            _, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
        err = err_bytes.decode()
        assert proc.returncode == 130 and "interrupted" in err and err.count("\n") == 1
        assert run_statuses(tmp_path) == ["interrupted"]
        code, _, err = await run_cli(server, tmp_path, "--no-media")
        assert code == 0, err
        assert run_statuses(tmp_path) == ["interrupted", "ok"]
        expected = {w["workId"]: w for w in expected_works(server.library, 40)}
        assert archived(tmp_path) == expected
