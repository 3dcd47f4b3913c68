"""kling-async export --all-accounts, the per-OUT lock, and the display of long waits."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kling_async import cli
from kling_async._export import account_file_names, checkpoint_path, lock_path
from kling_async._files import exclusive_lock
from kling_async._progress import Progress
from kling_async.testing import FakeKlingServer, Faults

from .test_cli_export import ROOT, TOKEN, expected_works, read_jsonl

EMAILS = ["a@example.com", "B@example.com", "odd/name@example.com"]


def all_args(server: FakeKlingServer, out: Path, *extra: str) -> list[str]:
    return [
        "export",
        str(out),
        "--all-accounts",
        "--base-url",
        server.base_url,
        "--token",
        server.token,
        "--page-size",
        "10",
        *extra,
    ]


def test_exports_every_account_to_its_own_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each account's works, exactly, in OUT/<email>.jsonl with its own checkpoint, its media
    in DIR/<email>/; a summary per account and in total."""
    out = tmp_path / "all"
    names = account_file_names(EMAILS)
    media = tmp_path / "media"
    with FakeKlingServer(tasks=25, token=TOKEN, emails=EMAILS, file_size=16) as server:
        extra = ("--download", str(media), "--file-types", "MP3", "--max-items", "12")
        assert cli.main(all_args(server, out, *extra)) == 0
        for email in EMAILS:
            path = out / f"{names[email]}.jsonl"
            works = expected_works(server.library_for(email), 10)[:12]
            assert read_jsonl(path) == works
            assert checkpoint_path(path).exists()
            audio = {f"{w['workId']}.mp3" for w in works if w["contentType"] == "audio"}
            assert audio and {p.name for p in (media / names[email]).iterdir()} == audio
    assert names["a@example.com"] == "a@example.com"
    assert "/" not in names["odd/name@example.com"]
    err = capsys.readouterr().err
    for email in EMAILS:
        assert f"account {email} -> " in err
    assert "all accounts: 3 exported into" in err


def test_one_failing_account_loses_nothing_of_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An account whose requests keep failing is reported and makes the exit status 1; the
    others are complete; --resume then finishes it and leaves the others alone."""
    out = tmp_path / "all"
    names = account_file_names(EMAILS)
    bad = "B@example.com"
    with FakeKlingServer(tasks=25, token=TOKEN, emails=EMAILS) as server:
        server.faults = Faults(rate=1.0, kinds=("500",), email=bad)
        assert cli.main(all_args(server, out, "--max-retries", "0")) == 1
        err = capsys.readouterr().err
        assert f"account {bad} failed: server error (HTTP 500)" in err
        assert f"1 failed: {bad}" in err
        for email in EMAILS:
            if email != bad:
                path = out / f"{names[email]}.jsonl"
                assert read_jsonl(path) == expected_works(server.library_for(email), 10)
        server.faults = Faults()
        assert cli.main(all_args(server, out, "--resume")) == 0
        for email in EMAILS:
            path = out / f"{names[email]}.jsonl"
            assert read_jsonl(path) == expected_works(server.library_for(email), 10)
    assert capsys.readouterr().err.count("export already finished") == 2


def test_all_accounts_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--all-accounts needs a directory and no --email; no account configured is exit 1."""
    with FakeKlingServer(tasks=5, token=TOKEN) as server:
        assert cli.main(all_args(server, Path("-"))) == 2
        assert cli.main([*all_args(server, tmp_path / "d"), "--email", "x@example.com"]) == 2
        (tmp_path / "file").write_text("x")
        assert cli.main(all_args(server, tmp_path / "file")) == 2
        assert cli.main(all_args(server, tmp_path / "none")) == 1
    err = capsys.readouterr().err
    assert "needs a directory" in err and "drop --email" in err
    assert "no Kling account is configured" in err
    assert "Traceback" not in err


def test_file_names_never_collide() -> None:
    """Emails equal but for case or unsafe characters still get distinct file names."""
    emails = ["Me@x.com", "me@x.com", "a/b@x.com", "a_b@x.com", "..@x.com", ""]
    names = account_file_names(emails)
    assert len({n.casefold() for n in names.values()}) == len(emails)
    assert all(n and not n.startswith(".") and "/" not in n for n in names.values())


def test_a_second_export_of_the_same_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While one export holds OUT.lock, another export of OUT stops with exit 2."""
    out = tmp_path / "w.jsonl"
    with FakeKlingServer(tasks=5, token=TOKEN) as server, exclusive_lock(lock_path(out)):
        args = ["export", str(out), "--base-url", server.base_url, "--token", TOKEN]
        assert cli.main(args) == 2
    assert "another export is writing" in capsys.readouterr().err
    assert not out.exists()


def test_wait_off_a_terminal_is_one_plain_line() -> None:
    """Off a TTY, a long wait prints one line when it starts, and nothing while it lasts."""
    stream = io.StringIO()
    progress = Progress(stream, tty=False, prefix="kling-async export")
    progress.waiting("429 from the API: waiting 118 s (retry 2/5)", 118)
    assert stream.getvalue() == "kling-async export: 429 from the API: waiting 118 s (retry 2/5)\n"
    Progress(stream, quiet=True).waiting("x: waiting 9 s", 9)
    assert stream.getvalue().count("\n") == 1


def test_429_countdown_on_a_terminal(tmp_path: Path) -> None:
    """On a TTY (a pty), a 429 with Retry-After: 3 takes the progress line over and counts
    down; the export then completes."""
    out = tmp_path / "w.jsonl"
    with FakeKlingServer(tasks=10, token=TOKEN) as server:
        server.faults = Faults(at={1: "429"}, retry_after="3")
        master, slave = pty.openpty()
        args = ["export", str(out), "--base-url", server.base_url, "--token", TOKEN]
        env = {k: v for k, v in os.environ.items() if k != "USEAPI_TOKEN"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "kling_async", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            cwd=ROOT,
            env=env,
        )
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 60  # a guard against a hang, not a timing assertion
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1.0)
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
        finally:
            os.close(master)
            status = proc.wait(timeout=60)
    text = seen.decode("utf-8", "replace")
    assert status == 0, text
    assert "\r" in text
    assert "429 from the API: waiting 3 s (retry 1/5)" in text
    assert "429 from the API: waiting 2 s (retry 1/5)" in text  # it counts down
    assert "exported" in text
