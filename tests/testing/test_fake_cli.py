"""The fake-server command line: standalone process, options, clean shutdown."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys

import aiohttp
import pytest

from kling_async.testing import _cli

AUTH = {"Authorization": "Bearer cli-token"}


async def test_subprocess_prints_url_serves_and_stops_on_sigterm() -> None:
    """The process prints its base URL on one stdout line, serves, and exits 0 on SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kling_async.testing._cli",
        *("--port", "0", "--tasks", "50", "--token", "cli-token", "--seed", "3"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("http://127.0.0.1:") and line.endswith("/v1/kling")
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.get(line + "/assets/", params={"pageSize": "100"}) as resp,
        ):
            assert resp.status == 200
            assert len((await resp.json())["history"]) == 50
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert out == b""  # nothing after the URL line
    assert b"Ctrl-C" in err


async def test_serve_in_process_with_faults(capsys: pytest.CaptureFixture[str]) -> None:
    """add_arguments + serve() run the server in the caller's loop until cancelled."""
    parser = argparse.ArgumentParser()
    _cli.add_arguments(parser)
    argv = "--port 0 --tasks 5 --token cli-token --fault-rate 1 --fault-kinds 503"
    args = parser.parse_args([*argv.split(), "--email", "a@example.com", "--email", "b@x.org"])
    task = asyncio.create_task(_cli.serve(args))
    try:
        for _ in range(200):
            url = capsys.readouterr().out.strip()
            if url:
                break
            await asyncio.sleep(0.01)
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.get(url + "/assets/", params={"email": "a@example.com"}) as resp,
        ):
            assert resp.status == 503
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_invalid_options_exit_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Invalid option values are a usage error (exit status 2), nothing starts."""
    for argv in (["--fault-rate", "2"], ["--fault-kinds", "teapot", "--fault-rate", "0.5"]):
        with pytest.raises(SystemExit) as exc:
            _cli.main(argv)
        assert exc.value.code == 2
    assert "fault" in capsys.readouterr().err


def test_port_in_use_returns_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that cannot be bound is reported on stderr with exit status 1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert _cli.main(["--port", str(port), "--tasks", "1"]) == 1
    assert "kling-async fake-server" in capsys.readouterr().err
