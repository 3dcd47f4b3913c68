"""Group commit, signals and one writer: durable without an fsync per page, never corrupt.

- the export fsyncs ``OUT`` and replaces its checkpoint about once per ``--commit-interval``,
  at the end and when stopped; a checkpoint never points past durable bytes;
- ``kill -9`` at random moments, resumed each time: each work once, no partial line;
- Ctrl-C exits 130 and SIGTERM 143, each after committing everything written;
- a second export, or a demo, of an ``OUT`` in use refuses at once (exit 2), touching nothing;
  a demo never replaces an export it did not write unless ``--force``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import random
import signal
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from kling_async import cli
from kling_async._export import ExportConfig, ExportState, checkpoint_path, lock_path, run_export
from kling_async.testing import FakeKlingServer, Faults

from .conftest import Scripted, make_page
from .test_cli_export import (
    TOKEN,
    committed_works,
    expected_works,
    export_args,
    line_count,
    read_jsonl,
    run_process,
    spawn,
    wait_until,
)


def state_of(out: Path) -> ExportState:
    return msgspec.json.decode(checkpoint_path(out).read_bytes(), type=ExportState)


def assert_checkpoint_matches(out: Path) -> ExportState:
    """The checkpoint covers a prefix of OUT made of whole lines, holding ``works`` lines."""
    state = state_of(out)
    data = out.read_bytes()
    assert state.out_bytes <= len(data)
    assert state.out_bytes == 0 or data[state.out_bytes - 1 : state.out_bytes] == b"\n"
    assert data[: state.out_bytes].count(b"\n") == state.works
    return state


# -- group commit --------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "most"), [(0.0, None), (3600.0, 6)])
async def test_fsyncs_follow_the_commit_interval(
    scripted: Scripted,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    interval: float,
    most: int | None,
) -> None:
    """0 commits after every page (3 fsyncs each); a long interval commits only at the start
    and the end, whatever the number of pages."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=make_page(int(request.query["pageNum"]), 5, total_pages=20))

    scripted.handle(handler)
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    out = tmp_path / "w.jsonl"
    config = ExportConfig(
        out=str(out), token=TOKEN, base_url=scripted.base_url, commit_interval=interval
    )
    result = await run_export(config)
    assert result.works == 100 and result.pages == 21
    if most is None:
        assert len(fsyncs) >= 3 * 20
    else:
        assert len(fsyncs) <= most
    state = assert_checkpoint_matches(out)
    assert state.finished and state.works == 100 and state.out_bytes == out.stat().st_size


async def test_commits_while_the_api_is_slow_and_when_cancelled(
    scripted: Scripted, tmp_path: Path
) -> None:
    """A page written before a long wait is committed within an interval, without a next
    page; cancelling the export then commits what was written and re-raises."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        n = int(request.query["pageNum"])
        if n >= 3:
            await release.wait()
        return web.Response(body=make_page(n, 4, total_pages=5))

    scripted.handle(handler)
    out = tmp_path / "w.jsonl"
    config = ExportConfig(
        out=str(out), token=TOKEN, base_url=scripted.base_url, commit_interval=0.05, prefetch=0
    )
    task = asyncio.create_task(run_export(config))
    try:
        await wait_until(lambda: committed_works(out) == 8, timeout=10)
        assert_checkpoint_matches(out)
    finally:
        task.cancel()
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    state = assert_checkpoint_matches(out)
    assert state.out_bytes == out.stat().st_size and not state.finished


async def test_kill_9_at_random_moments(tmp_path: Path) -> None:
    """kill -9 at random moments with group commit on, resuming after each: the finished file
    holds each work once and no partial line; every checkpoint matched its file."""
    await kill_at_random(tmp_path, kills=4, seed=1)


async def kill_at_random(tmp_path: Path, *, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    out = tmp_path / "works.jsonl"
    async with FakeKlingServer(tasks=2000, token=TOKEN, seed=21, latency=0.02) as server:
        expected = expected_works(server.library, 10)
        for n in range(kills):
            extra = ["--resume"] if n else []
            proc = await spawn(
                *export_args(server, str(out), "--page-size", "10", *extra),
                "--commit-interval",
                "0.1",
            )
            try:
                await asyncio.sleep(rng.uniform(0.2, 1.0))  # startup is ~0.3 s
            finally:
                with contextlib.suppress(ProcessLookupError):  # it may have finished
                    proc.kill()
                await proc.communicate()
            if proc.returncode == 0:
                break  # finished before the kill: nothing left to interrupt
            if checkpoint_path(out).exists():
                assert_checkpoint_matches(out)
        code, _, err = await run_process(*export_args(server, str(out), "--resume"))
        assert code == 0, err
    assert read_jsonl(out) == expected


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
async def test_signals_commit_what_was_written(
    tmp_path: Path, sig: signal.Signals, code: int, word: str
) -> None:
    """Ctrl-C exits 130 and SIGTERM 143, one line each, after committing every line written:
    the checkpoint covers the whole file, even with a commit interval longer than the run."""
    out = tmp_path / "works.jsonl"
    async with FakeKlingServer(tasks=400, token=TOKEN, seed=12, latency=0.02) as server:
        expected = expected_works(server.library, 20)
        proc = await spawn(
            *export_args(server, str(out), "--page-size", "20"),
            "--commit-interval",
            "3600",
            "-q",  # the signal's line alone (a progress line comes every 10 pages otherwise)
        )
        try:
            await wait_until(lambda: line_count(out) >= 60)
        finally:
            proc.send_signal(sig)
            _, err_bytes = await asyncio.wait_for(proc.communicate(), 20)
        err = err_bytes.decode()
        assert proc.returncode == code, err
        assert f"{word}; resume with --resume" in err
        assert "Traceback" not in err and err.count("\n") == 1
        state = assert_checkpoint_matches(out)
        assert state.out_bytes == out.stat().st_size and state.works >= 60
        code2, _, err = await run_process(*export_args(server, str(out), "--resume"))
        assert code2 == 0, err
    assert read_jsonl(out) == expected


# -- "progress saved" only when a resume gets further ---------------------------------------


@pytest.mark.parametrize(
    ("status", "hint"),
    [(503, True), (401, False)],
    ids=["transient", "unauthorized"],
)
async def test_progress_saved_hint_only_when_a_resume_gets_further(
    scripted: Scripted, tmp_path: Path, status: int, hint: bool
) -> None:
    """A 503 after pages were committed says 'continue with --resume'; a 401 never does."""

    async def handler(request: web.Request) -> web.Response:
        n = int(request.query["pageNum"])
        if n >= 3:
            return web.json_response({"error": "nope", "code": status}, status=status)
        return web.Response(body=make_page(n, 4, total_pages=5))

    scripted.handle(handler)
    out = tmp_path / "w.jsonl"
    args = [
        "export",
        str(out),
        "--base-url",
        scripted.base_url,
        "--token",
        TOKEN,
        "--max-retries",
        "0",
        "-q",
    ]
    code, _, err = await asyncio.to_thread(_run_cli, args)
    assert code == 1
    assert ("progress saved: continue with --resume" in err) is hint, err
    assert state_of(out).works == 8


async def test_no_progress_saved_hint_before_any_work(scripted: Scripted, tmp_path: Path) -> None:
    """A 503 on the first page: nothing was committed, so nothing is said about resuming."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": "down"}, status=503)

    scripted.handle(handler)
    out = tmp_path / "w.jsonl"
    args = ["export", str(out), "--base-url", scripted.base_url, "--token", TOKEN]
    code, _, err = await asyncio.to_thread(_run_cli, [*args, "--max-retries", "0", "-q"])
    assert code == 1 and "server error (HTTP 503)" in err
    assert "--resume" not in err


def _run_cli(args: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(args)
    return code, stdout.getvalue(), stderr.getvalue()


# -- one writer ----------------------------------------------------------------------------


@pytest.mark.parametrize("second", ["export", "demo"])
async def test_a_second_writer_refuses_and_the_first_is_intact(tmp_path: Path, second: str) -> None:
    """While an export writes DIR/works.jsonl, another export of it, or a demo into DIR,
    exits 2 at once with one clear line and touches nothing; the first finishes intact."""
    out = tmp_path / "works.jsonl"
    async with FakeKlingServer(tasks=800, token=TOKEN, seed=8, latency=0.05) as server:
        expected = expected_works(server.library, 20)
        # ~2 s: 40 pages one at a time, so the second writer comes while it runs.
        first = await spawn(*export_args(server, str(out), "--page-size", "20", "--prefetch", "0"))
        try:
            await wait_until(lambda: line_count(out) >= 40)
            before = sorted(os.listdir(tmp_path))
            if second == "export":
                code, _, err = await run_process(*export_args(server, str(out), "--force"))
            else:
                code, _, err = await run_process("demo", "--out", str(tmp_path), "--force")
            assert code == 2, err
            assert f"another export is writing {out}" in err
            assert err.count("\n") == 1 and "Traceback" not in err
            assert sorted(os.listdir(tmp_path)) == before
            assert first.returncode is None, "the first export ended before the second came"
            _, first_err = await asyncio.wait_for(first.communicate(), 60)
        finally:
            if first.returncode is None:
                first.kill()
                await first.communicate()
        assert first.returncode == 0, first_err.decode()
    assert read_jsonl(out) == expected
    assert lock_path(out).exists()  # left for the next export; the kernel holds no lock


def test_demo_refuses_an_export_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real export in DIR/works.jsonl is not replaced by the demo (exit 2) unless --force;
    the demo's own export is (it marks its checkpoint)."""
    monkeypatch.delenv("USEAPI_TOKEN", raising=False)
    out = tmp_path / "works.jsonl"
    with FakeKlingServer(tasks=30, token=TOKEN, seed=3) as server:
        assert cli.main(export_args(server, str(out), "-q")) == 0
    before = out.read_bytes()
    demo = ["demo", "--out", str(tmp_path), "--tasks", "20", "--downloads", "0", "-q"]
    assert cli.main(demo) == 2
    err = capsys.readouterr().err
    assert "holds an export the demo did not write" in err and "--force" in err
    assert out.read_bytes() == before
    assert not (tmp_path / "media").exists()
    out.write_bytes(b"not an export\n")  # no checkpoint at all: not the demo's either
    checkpoint_path(out).unlink()
    assert cli.main(demo) == 2
    assert cli.main([*demo, "--force"]) == 0
    assert state_of(out).options.demo
    assert cli.main(demo) == 0  # its own: replaced without asking


def test_fault_storm_with_group_commit(tmp_path: Path) -> None:
    """Retries and group commit together: nothing lost or duplicated."""
    out = tmp_path / "w.jsonl"
    faults = Faults(rate=0.2, kinds=("429", "503"), retry_after="0", seed=4)
    with FakeKlingServer(tasks=200, token=TOKEN, seed=4, faults=faults) as server:
        args = export_args(server, str(out), "-q", "--page-size", "10", "--backoff-base", "0")
        assert cli.main([*args, "--commit-interval", "0.01"]) == 0
        expected = expected_works(server.library, 10)
    assert read_jsonl(out) == expected


# -- errors name the user's files ------------------------------------------------------------


async def test_a_full_disk_names_out_and_says_progress_is_saved(
    scripted: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while syncing OUT after a commit: one line naming OUT, exit 1, the hint (a full
    disk may pass), and a checkpoint still matching its file."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=make_page(int(request.query["pageNum"]), 4, total_pages=6))

    scripted.handle(handler)
    out = tmp_path / "w.jsonl"
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if committed_works(out) > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    args = ["export", str(out), "--base-url", scripted.base_url, "--token", TOKEN, "-q"]
    code, _, err = await asyncio.to_thread(_run_cli, [*args, "--commit-interval", "0"])
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert code == 1
    assert f"No space left on device ({out})" in err
    assert "progress saved: continue with --resume" in err
    assert err.count("\n") == 1
    assert_checkpoint_matches(out)


def test_a_failed_checkpoint_write_names_the_checkpoint_not_its_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """atomic_write reports the file the user knows, and leaves no temp file behind."""
    from kling_async._files import atomic_write

    target = tmp_path / "w.jsonl.checkpoint.json"

    def refuse(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError) as info:
        atomic_write(target, b"{}")
    assert info.value.filename == str(target)
    assert not list(tmp_path.iterdir())
