"""Hostile input to the command line: whatever the argument, checkpoint or server answer, the
CLI ends with exactly one line on stderr, no traceback, never the token, and exit status 1 for
a failure (network, server, disk) or 2 for a usage error (argument, damaged checkpoint)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kling_async import cli
from kling_async.testing import FakeKlingServer
from kling_async.testing import _cli as fake_cli

TOKEN = "sk-hostile-cli-5b1e07"


def assert_one_line(err: str) -> None:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert TOKEN not in err


# -- arguments --------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    ["export", "w.jsonl", "--timeout", "inf"],
    ["export", "w.jsonl", "--timeout", "nan"],
    ["export", "w.jsonl", "--timeout", "0"],
    ["export", "w.jsonl", "--backoff-base", "inf"],
    ["export", "w.jsonl", "--max-retries", "-1"],
    ["export", "w.jsonl", "--since", "1714521600"],
    ["export", "w.jsonl", "--since", "yesterday"],
    ["export", "w.jsonl", "--page-size", "0"],
    ["export", "w.jsonl", "--jobs", "0"],
    ["export", "w.jsonl", "--content-type", "gif"],
    ["export", "w.jsonl", "--file-types", "MP4"],
    ["export", "w.jsonl", "--base-url", "ftp://example.com/v1/kling"],
    ["export", "w.jsonl", "--base-url", "http://[::1/v1/kling"],
    ["export", "w.jsonl", "--base-url", "http://h:99999/v1/kling"],
    ["export", "w.jsonl", "--base-url", "http://" + "a" * 70 + ".example/v1/kling"],
    ["export", "w.jsonl", "--email", " "],
    ["export", "w.jsonl", "--token", "токен-секрет"],
    ["export", "w.jsonl", "--token", "two words"],
    ["export", "w.jsonl", "--no-such-option"],
    ["export", "-", "--resume"],
    ["fake-server", "--port", "99999"],
    ["fake-server", "--port", "http"],
    ["fake-server", "--cdn-port", "-1"],
    ["fake-server", "--latency", "inf"],
    ["fake-server", "--fault-rate", "2"],
    ["fake-server", "--fault-rate", "0.5", "--fault-kinds", "teapot"],
    ["demo", "--tasks", "0"],
    ["no-such-command"],
    [],
]


@pytest.mark.parametrize("argv", BAD_ARGUMENTS, ids=lambda a: " ".join(a) or "(none)")
def test_bad_arguments_one_line_exit_2(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad argument: one line naming it, exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USEAPI_TOKEN", TOKEN)
    assert cli.main(argv) == 2
    assert_one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_fake_server_port_out_of_range_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`fake-server --port 99999` directly: argparse's exit 2, one line (no OverflowError)."""
    with pytest.raises(SystemExit) as info:
        fake_cli.main(["--port", "99999"])
    assert info.value.code == 2
    assert_one_line(capsys.readouterr().err)


def test_a_bug_is_one_line_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even an exception nobody planned for ends in one line and exit 1."""

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(cli, "run_export", broken)
    assert cli.main(["export", str(tmp_path / "w.jsonl"), "--token", TOKEN]) == 1
    err = capsys.readouterr().err
    assert_one_line(err)
    assert "ZeroDivisionError" in err


# -- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["."], 2),
        ([""], 2),
        (["missing-dir/w.jsonl"], 1),
        (["a-file/w.jsonl"], 1),
        (["w.jsonl", "--download", "a-file"], 1),
    ],
    ids=["dot", "empty", "missing-dir", "under-a-file", "download-onto-a-file"],
)
def test_unusable_files_one_line(
    args: list[str],
    status: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An OUT or download folder that cannot be used: one line; 2 when it is the argument
    itself (a directory), 1 when the disk refuses."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_bytes(b"x")
    with FakeKlingServer(5, token=TOKEN) as server:
        argv = ["export", *args, "--base-url", server.base_url, "--token", TOKEN, "-q"]
        assert cli.main(argv) == status
    assert_one_line(capsys.readouterr().err)


# -- checkpoints ------------------------------------------------------------------------------


def good_state(out_bytes: int = 0) -> dict[str, Any]:
    return {
        "version": 1,
        "out_bytes": out_bytes,
        "works": 0,
        "finished": False,
        "options": {"base_url": "http://127.0.0.1:9/v1/kling", "page_size": 40},
        "walk": {"next_page": 1, "page_size": 40},
    }


def with_changes(changes: dict[str, Any]) -> bytes:
    state = good_state()
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        target = state
        for key in path:
            target = target[key]
        target[last] = value
    return json.dumps(state).encode()


BAD_CHECKPOINTS: dict[str, bytes] = {
    "not-json": b"\x00\xffnot json",
    "truncated": json.dumps(good_state()).encode()[:30],
    "empty": b"",
    "a list": b"[]",
    "foreign json": b'{"some": "other tool"}',
    "future version": with_changes({"version": 99}),
    "negative length": with_changes({"out_bytes": -5}),
    "length past the file": with_changes({"out_bytes": 10**6}),
    "length as text": with_changes({"out_bytes": "12"}),
    "bad page size": with_changes({"walk.page_size": 0, "options.page_size": 0}),
    "bad content type": with_changes({"walk.content_type": "gif"}),
    "bad base url": with_changes({"options.base_url": "gopher://x"}),
    "bad file types": with_changes(
        {"options.download_dir": "media", "options.file_types": ["EXE"]}
    ),
    "nul in download dir": with_changes({"options.download_dir": "me\u0000dia"}),
}


@pytest.mark.parametrize("data", BAD_CHECKPOINTS.values(), ids=BAD_CHECKPOINTS.keys())
def test_damaged_or_foreign_checkpoint_one_line_exit_2(
    data: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--resume with a damaged or foreign checkpoint: one line, exit 2, OUT untouched."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "w.jsonl"
    out.write_bytes(b'{"workId": 1}\n')
    (tmp_path / "w.jsonl.checkpoint.json").write_bytes(data)
    assert cli.main(["export", str(out), "--resume", "--token", TOKEN, "-q"]) == 2
    assert_one_line(capsys.readouterr().err)
    assert out.read_bytes() == b'{"workId": 1}\n'


def test_checkpoint_that_is_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory where the checkpoint should be: one line, exit 2."""
    out = tmp_path / "w.jsonl"
    out.write_bytes(b"")
    (tmp_path / "w.jsonl.checkpoint.json").mkdir()
    assert cli.main(["export", str(out), "--resume", "--token", TOKEN]) == 2
    assert_one_line(capsys.readouterr().err)


# -- server answers ---------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answer(status: int, body: bytes, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    return handler


async def dropped(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    await response.prepare(request)
    await response.write(b'{"history": [')
    assert request.transport is not None
    request.transport.close()
    return response


async def slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(30)
    return web.Response()


DEEP = b'{"history": [{"works": [{"workId": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}]}"
ECHO = json.dumps({"error": f"bad token {TOKEN}", "token": TOKEN}).encode()

BAD_ANSWERS: dict[str, Handler] = {
    "401": answer(401, b'{"error": "Unauthorized", "code": 401}'),
    "402": answer(402, b'{"error": "Subscription required", "code": 402}'),
    "403 html": answer(403, b"<html>\n<body>Forbidden</body>\n</html>"),
    "404 text": answer(404, b"Configuration not found.\nTo create configuration use POST"),
    "429 forever": answer(429, b'{"error": "busy"}', **{"Retry-After": "0"}),
    "500": answer(500, b'{"error": "Internal Server Error"}'),
    "502 html": answer(502, b"<html><h1>502 Bad Gateway</h1></html>"),
    "418 teapot": answer(418, b"\x1b[2J\x1b[31mI'm a teapot\r\nsecond line\x07"),
    "token echoed": answer(400, ECHO),
    "multi-line error": answer(400, b'{"error": "line one\\nline two\\r\\n\\u001b[1mbold"}'),
    "non-utf8 error": answer(500, b"\xff\xfe\xfd broken \x80"),
    "huge error": answer(400, json.dumps({"error": "x" * 1_000_000}).encode()),
    "broken json": answer(200, b'{"history": ['),
    "deep json": answer(200, DEEP),
    "wrong shape": answer(200, b'{"history": 5}'),
    "a list": answer(200, b"[1, 2, 3]"),
    "html 200": answer(200, b"<html>maintenance</html>"),
    "bad redirect": answer(302, b"", Location="http://[::1/x"),
    "redirect to file": answer(302, b"", Location="file:///etc/passwd"),
    "redirect loop": answer(302, b"", Location="/v1/kling/assets/"),
    "redirect with token": answer(302, b"", Location=f"http://h:99999/?t={TOKEN}"),
    "dropped": dropped,
    "slow": slow,
}


@pytest.mark.parametrize("handler", BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
def test_server_answers_one_line_exit_1(
    handler: Handler, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any failing server answer: one line naming the cause, exit 1, never the token."""

    async def scenario() -> int:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            argv = ["export", str(tmp_path / "w.jsonl"), "--token", TOKEN, "-q"]
            argv += ["--base-url", str(server.make_url("/v1/kling")), "--timeout", "0.5"]
            argv += ["--max-retries", "1", "--backoff-base", "0"]
            return await asyncio.to_thread(cli.main, argv)
        finally:
            await server.close()

    assert asyncio.run(scenario()) == 1
    err = capsys.readouterr().err
    assert_one_line(err)
    assert err.isprintable() or (err.endswith("\n") and err[:-1].isprintable())
