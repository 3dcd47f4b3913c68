"""``export --download``: files named by workId, zips, resume, and hostile CDN answers."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kling_async import KlingSession, cli
from kling_async._download import Downloader, DownloadError, DownloadJob, safe_member_name
from kling_async._export import ExportConfig, run_export
from kling_async.testing import FakeKlingServer, FakeLibrary

TOKEN = "sk-download-test-91b2"
ROOT = Path(__file__).resolve().parent.parent
EXT = {"MP4": "mp4", "PNG": "png", "MP3": "mp3", "WAV": "wav"}


def all_works(library: FakeLibrary, page_size: int = 40) -> list[dict[str, Any]]:
    works: list[dict[str, Any]] = []
    page_num = 1
    while history := library.page(page_num, page_size)["history"]:
        works += [work for item in history for work in item["works"]]
        page_num += 1
    return works


def expected_files(server: FakeKlingServer, works: list[dict[str, Any]]) -> dict[str, bytes]:
    """File name -> bytes for every succeeded work of the fake, as the CDN serves them."""
    files: dict[str, bytes] = {}
    for work in works:
        if work["status"] != 99:
            continue
        for ft in work["downloadInfo"]["fileTypes"]:
            files[f"{work['workId']}.{EXT[ft['type']]}"] = server.file_bytes(
                work["workId"], ft["type"]
            )
    return files


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


# -- against the fake server ------------------------------------------------------------------


async def test_files_named_by_work_id_with_the_cdns_bytes_and_no_token(tmp_path: Path) -> None:
    """Every succeeded work's files land as <workId>.<ext> (audio zips unpacked), byte-exact;
    no CDN request carries Authorization; no .part file is left."""
    media = tmp_path / "media"
    async with FakeKlingServer(tasks=40, token=TOKEN, seed=2028, file_size=3000) as server:
        works = all_works(server.library)
        config = ExportConfig(
            out=str(tmp_path / "w.jsonl"), token=TOKEN, base_url=server.base_url,
            download_dir=str(media), jobs=3,
        )  # fmt: skip
        result = await run_export(config)
        expected = expected_files(server, works)
        assert server.stats.cdn_requests > 0
        assert server.stats.cdn_auth_requests == 0
    assert any(name.endswith(".wav") for name in expected)  # audio: MP3 + WAV, a zip
    assert listing(media) == expected
    stats = result.downloads
    assert stats is not None
    assert stats.failed == 0 and stats.files == len(expected)
    assert stats.not_succeeded == sum(w["status"] != 99 for w in works) > 0


async def test_resume_skips_complete_files(tmp_path: Path) -> None:
    """--resume of an export with media asks neither the API nor the CDN for complete files,
    and fetches the one that went missing."""
    media, out = tmp_path / "media", tmp_path / "w.jsonl"
    async with FakeKlingServer(tasks=20, token=TOKEN, seed=2028) as server:
        config = ExportConfig(out=str(out), token=TOKEN, base_url=server.base_url)
        config.download_dir = str(media)
        await run_export(config)
        before = listing(media)
        victim = sorted(before)[3]
        (media / victim).unlink()
        server.reset_stats()
        resumed = ExportConfig(out=str(out), token=TOKEN, resume=True)  # options from checkpoint
        result = await run_export(resumed)
        assert result.already_finished
        assert server.stats.requests == 0  # no assets page
        assert server.stats.downloads == 1 and server.stats.cdn_requests == 1
    assert listing(media) == before
    assert result.downloads is not None and result.downloads.present > 0


async def test_file_types_filter(tmp_path: Path) -> None:
    """--file-types MP4 fetches only videos; other works are counted as without files."""
    media = tmp_path / "media"
    async with FakeKlingServer(tasks=20, token=TOKEN, seed=2028) as server:
        config = ExportConfig(
            out=str(tmp_path / "w.jsonl"), token=TOKEN, base_url=server.base_url,
            download_dir=str(media), file_types=["MP4"],
        )  # fmt: skip
        result = await run_export(config)
        videos = [w for w in all_works(server.library) if w["contentType"] == "video"]
    names = sorted(p.name for p in media.iterdir())
    assert names and all(n.endswith(".mp4") for n in names)
    assert names == sorted(f"{w['workId']}.mp4" for w in videos if w["status"] == 99)
    assert result.downloads is not None and result.downloads.no_files > 0


async def test_kill_9_during_downloads_then_resume(tmp_path: Path) -> None:
    """SIGKILL while downloading, then --resume: every file complete, stale .part removed."""
    media, out = tmp_path / "media", tmp_path / "w.jsonl"
    async with FakeKlingServer(tasks=300, token=TOKEN, seed=2028, latency=0.05) as server:
        works = all_works(server.library, 20)
        args = ["export", str(out), "--base-url", server.base_url, "--token", TOKEN]
        args += ["--page-size", "20", "--download", str(media), "--prefetch", "1"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kling_async", *args, cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(4000):
                if media.is_dir() and len(os.listdir(media)) >= 40:
                    break
                await asyncio.sleep(0.005)
        finally:
            proc.kill()
            await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert out.read_bytes().count(b"\n") < len(works), "the walk finished before the kill"
        stale = media / f"{works[0]['workId']}.mp4.part"
        stale.write_bytes(b"half a file")
        code = await asyncio.to_thread(cli.main, [*args[:2], "--resume", "--token", TOKEN, "-q"])
        assert code == 0
        expected = expected_files(server, works)
        assert server.stats.cdn_auth_requests == 0
    assert listing(media) == expected
    assert [json.loads(line)["workId"] for line in out.read_text().splitlines()] == [
        w["workId"] for w in works
    ]


# -- a hostile API and CDN --------------------------------------------------------------------


def make_work(work_id: int, types: tuple[str, ...] = ("MP4",)) -> dict[str, Any]:
    return {
        "workId": work_id,
        "status": 99,
        "createTime": 1_800_000_000_000 - work_id,
        "contentType": "video",
        "downloadInfo": {"fileTypes": [{"type": t, "watermark": False} for t in types]},
    }


CdnHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Hostile:
    """An API whose works and cdnUrls the test chooses, and a CDN on another port."""

    def __init__(self) -> None:
        self.pages: list[list[dict[str, Any]]] = []
        self.links: dict[int, str] = {}
        self.cdn: dict[str, CdnHandler] = {}
        self.cdn_headers: list[dict[str, str]] = []
        self.api_paths: list[str] = []
        self.bounce_headers: list[dict[str, str]] = []
        self.api = TestServer(self._app(self._api), host="127.0.0.1")
        self.cdn_server = TestServer(self._app(self._cdn), host="127.0.0.1")

    @staticmethod
    def _app(handler: CdnHandler) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        return app

    @property
    def base_url(self) -> str:
        return str(self.api.make_url("/v1/kling"))

    def cdn_url(self, path: str) -> str:
        return str(self.cdn_server.make_url("/")).rstrip("/") + path

    def add_work(self, work_id: int, types: tuple[str, ...] = ("MP4",)) -> None:
        if not self.pages:
            self.pages.append([])
        self.pages[0].append(make_work(work_id, types))

    def serve(self, path: str, body: bytes, status: int = 200) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, body=body)

        self.cdn[path] = handler

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self.api_paths.append(request.path)
        if request.path.endswith("/bounce"):
            self.bounce_headers.append(dict(request.headers))
            return web.Response(body=b"bounced")
        if request.path.rstrip("/").endswith("/assets/download"):
            work_id = int(request.query["workIds"])
            return web.json_response({"cdnUrl": self.links[work_id], "status": "success"})
        page = int(request.query.get("pageNum", "1"))
        works = self.pages[page - 1] if page <= len(self.pages) else []
        history = [{"works": [w], "task": {"id": w["workId"]}} for w in works]
        return web.json_response({"history": history})

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        self.cdn_headers.append(dict(request.headers))
        handler = self.cdn.get(request.path_qs) or self.cdn.get(request.path)
        if handler is None:
            raise web.HTTPNotFound
        return await handler(request)


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    """The hostile API and CDN, started on 127.0.0.1."""
    server = Hostile()
    await server.api.start_server()
    await server.cdn_server.start_server()
    try:
        yield server
    finally:
        await server.api.close()
        await server.cdn_server.close()


async def export_cli(hostile: Hostile, tmp_path: Path, *extra: str) -> int:
    """Run the CLI (in a thread: it runs its own event loop) against the hostile servers."""
    argv = ["export", str(tmp_path / "w.jsonl"), "--base-url", hostile.base_url]
    argv += ["--token", TOKEN, "--download", str(tmp_path / "media"), "-q"]
    argv += ["--max-retries", "1", "--backoff-base", "0", *extra]
    return await asyncio.to_thread(cli.main, argv)


def zip_bytes(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "evil",
    ["../evil.mp3", "../../evil.mp3", "/tmp/abs-evil.mp3", "C:\\evil.mp3", "a/../../evil.mp3"],
)
async def test_zip_slip_is_refused_whole(
    hostile: Hostile, tmp_path: Path, capsys: pytest.CaptureFixture[str], evil: str
) -> None:
    """A zip with a ../, absolute or drive-letter entry writes nothing at all; the work fails
    (stderr line, exit 1) and the other works still download."""
    hostile.add_work(101, ("MP3", "WAV"))
    hostile.add_work(102)
    hostile.links[101] = hostile.cdn_url("/z/101.zip")
    hostile.links[102] = hostile.cdn_url("/f/102.mp4")
    hostile.serve("/z/101.zip", zip_bytes({"101.mp3": b"a", evil: b"pwned", "101.wav": b"b"}))
    hostile.serve("/f/102.mp4", b"video-102")
    assert await export_cli(hostile, tmp_path) == 1
    err = capsys.readouterr().err
    assert "download failed for work 101: unsafe entry name" in err
    assert "1 download(s) failed" in err
    assert files_under(tmp_path) == {
        "w.jsonl",
        "w.jsonl.checkpoint.json",
        "w.jsonl.lock",
        "media/102.mp4",
    }
    assert "abs-evil.mp3" not in os.listdir("/tmp")


async def test_zip_symlink_entry_and_unknown_extensions(
    hostile: Hostile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zip holding a symlink entry is refused; harmless extra entries keep a workId-prefixed,
    sanitised name and executables are skipped."""
    hostile.add_work(201, ("MP3", "WAV"))
    hostile.add_work(202, ("MP3", "WAV"))
    hostile.links[201] = hostile.cdn_url("/z/201.zip")
    hostile.links[202] = hostile.cdn_url("/z/202.zip")
    hostile.serve("/z/201.zip", zip_bytes({"201.mp3": b"a", "201.wav": b"b"}, symlink="x.mp3"))
    entries = {
        "dir/song.mp3": b"mp3",
        "take two.wav": b"wav",
        "extra.mp3": b"extra",
        ".hidden.png": b"png",
        "2021.png": b"another work's name",
        "202-cover.png": b"cover",
        "run.sh": b"rm -rf /",
    }
    hostile.serve("/z/202.zip", zip_bytes(entries))
    assert await export_cli(hostile, tmp_path) == 1
    assert "work 201: zip entry 'x.mp3' is a symbolic link" in capsys.readouterr().err
    assert listing(tmp_path / "media") == {
        "202.mp3": b"mp3",
        "202.wav": b"wav",
        "202_extra.mp3": b"extra",
        "202_hidden.png": b"png",
        "202_2021.png": b"another work's name",
        "202-cover.png": b"cover",
    }


async def test_cdn_url_names_are_never_used(hostile: Hostile, tmp_path: Path) -> None:
    """Whatever the cdnUrl's path says (../, encoded slashes, another extension), the file is
    <workId>.<ext of the requested type> inside DIR."""
    hostile.add_work(301)
    hostile.add_work(302, ("PNG",))
    hostile.links[301] = hostile.cdn_url("/a/..%2F..%2Fevil.sh")
    hostile.links[302] = hostile.cdn_url("/b/%2e%2e/%2e%2e/etc/passwd")
    for path in ("/a/..%2F..%2Fevil.sh", "/a/../../evil.sh", "/a/evil.sh", "/etc/passwd"):
        hostile.serve(path, b"payload")
    assert await export_cli(hostile, tmp_path) == 0
    assert files_under(tmp_path / "media") == {"301.mp4", "302.png"}
    assert files_under(tmp_path) == {
        "w.jsonl", "w.jsonl.checkpoint.json", "w.jsonl.lock", "media/301.mp4", "media/302.png",
    }  # fmt: skip


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.mp4", "", "//x/y"])
async def test_non_http_cdn_urls_are_refused(
    hostile: Hostile, tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """A cdnUrl that is not absolute http(s) is a reported failure, and nothing is written."""
    hostile.add_work(401)
    hostile.links[401] = url
    assert await export_cli(hostile, tmp_path) == 1
    assert "download failed for work 401" in capsys.readouterr().err
    assert files_under(tmp_path / "media") == set()


async def test_no_authorization_to_the_cdn_or_its_redirects(
    hostile: Hostile, tmp_path: Path
) -> None:
    """CDN requests carry no Authorization, nor does a CDN redirect back to the API's origin."""
    hostile.add_work(501)
    hostile.add_work(502)
    hostile.links[501] = hostile.cdn_url("/f/501.mp4")
    hostile.links[502] = hostile.cdn_url("/r/502")
    hostile.serve("/f/501.mp4", b"five-oh-one")

    async def bounce(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(hostile.base_url + "/bounce")

    hostile.cdn["/r/502"] = bounce
    assert await export_cli(hostile, tmp_path) == 0
    assert listing(tmp_path / "media") == {"501.mp4": b"five-oh-one", "502.mp4": b"bounced"}
    assert len(hostile.cdn_headers) == 2 and len(hostile.bounce_headers) == 1
    for headers in [*hostile.cdn_headers, *hostile.bounce_headers]:
        assert "Authorization" not in headers
        assert TOKEN not in json.dumps(headers)


async def test_planted_symlinks_are_not_followed(hostile: Hostile, tmp_path: Path) -> None:
    """A symlink planted at NAME.part is replaced, not written through; one planted at the
    final name is refused; their targets outside DIR stay untouched."""
    media = tmp_path / "media"
    media.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a").write_bytes(b"keep-a")
    (outside / "b").write_bytes(b"keep-b")
    (media / "601.mp4.part").symlink_to(outside / "a")
    (media / "602.mp4").symlink_to(outside / "b")
    for wid in (601, 602):
        hostile.add_work(wid)
        hostile.links[wid] = hostile.cdn_url(f"/f/{wid}.mp4")
        hostile.serve(f"/f/{wid}.mp4", b"new")
    assert await export_cli(hostile, tmp_path) == 1
    assert (outside / "a").read_bytes() == b"keep-a"
    assert (outside / "b").read_bytes() == b"keep-b"
    assert (media / "601.mp4").read_bytes() == b"new" and not (media / "601.mp4").is_symlink()


async def test_failed_download_is_retried_by_resume(
    hostile: Hostile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CDN failure fails that work only (exit 1, no .part left); --resume fetches it later."""
    for wid in (701, 702, 703):
        hostile.add_work(wid)
        hostile.links[wid] = hostile.cdn_url(f"/f/{wid}.mp4")
        hostile.serve(f"/f/{wid}.mp4", f"v{wid}".encode())
    hostile.serve("/f/702.mp4", b"gone", status=404)
    assert await export_cli(hostile, tmp_path) == 1
    assert "download failed for work 702: CDN answered HTTP 404" in capsys.readouterr().err
    assert files_under(tmp_path / "media") == {"701.mp4", "703.mp4"}
    hostile.serve("/f/702.mp4", b"v702")
    hostile.cdn_headers.clear()
    argv = ["export", str(tmp_path / "w.jsonl"), "--resume", "--token", TOKEN, "-q"]
    assert await asyncio.to_thread(cli.main, argv) == 0
    assert len(hostile.cdn_headers) == 1  # only the missing file
    assert listing(tmp_path / "media") == {
        "701.mp4": b"v701",
        "702.mp4": b"v702",
        "703.mp4": b"v703",
    }


async def test_downloads_trail_the_walk_with_bounded_memory(
    hostile: Hostile, tmp_path: Path
) -> None:
    """While the CDN stalls, the walk waits behind a small queue instead of reading ahead."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(body=b"x")

    for wid in range(801, 841):
        hostile.pages.append([make_work(wid)])
        hostile.links[wid] = hostile.cdn_url(f"/f/{wid}.mp4")
        hostile.cdn[f"/f/{wid}.mp4"] = slow
    task = asyncio.create_task(export_cli(hostile, tmp_path, "--jobs", "1", "--page-size", "1"))
    await asyncio.sleep(0.5)
    pages_while_stalled = sum("/assets/download" not in p for p in hostile.api_paths)
    release.set()
    assert await task == 0
    # 1 downloading + 2 queued + 1 waiting to be queued, then what the walk holds: 3 pages in
    # flight (prefetch 2), up to 12 received and waiting for the head probe that proves
    # their order, and that probe: bounded, far from the 40 pages there are.
    assert pages_while_stalled <= 4 + 3 + 12 + 1
    assert len(os.listdir(tmp_path / "media")) == 40


async def test_zip_bomb_is_capped(hostile: Hostile, tmp_path: Path) -> None:
    """A zip whose entries add up to more than max_unzipped_bytes is refused unextracted."""
    hostile.add_work(901, ("MP3", "WAV"))
    hostile.links[901] = hostile.cdn_url("/z/901.zip")
    hostile.serve("/z/901.zip", zip_bytes({"901.mp3": b"\0" * 2_000_000, "901.wav": b"w"}))
    async with KlingSession(TOKEN, base_url=hostile.base_url) as kling:
        async with Downloader(kling, tmp_path / "m", max_unzipped_bytes=1_000_000) as dl:
            with pytest.raises(DownloadError, match="uncompressed"):
                await dl.download(DownloadJob(901, ("MP3", "WAV")))
        assert os.listdir(tmp_path / "m") == []


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("123.mp4", "123.mp4"),
        ("sub/dir/123.mp4", "123.mp4"),
        ("win\\dir\\clip.wav", "clip.wav"),
        ("my clip (1).mp4", "my_clip__1_.mp4"),
        ("..hidden.png", "hidden.png"),
        ("ünïcode.mp3", "_n_code.mp3"),
    ],
)
def test_safe_member_name_keeps_a_clean_basename(name: str, safe: str) -> None:
    """Server-given names are cut to a sanitised basename."""
    assert safe_member_name(name) == safe


@pytest.mark.parametrize(
    "name", ["../x.mp4", "/etc/x.mp4", "\\\\server\\x.mp4", "C:x.mp4", "a/../b.mp4", "x\0.mp4", "."]
)
def test_safe_member_name_refuses_traversal(name: str) -> None:
    """Absolute, drive-letter, parent-directory, NUL and empty names are refused."""
    with pytest.raises(DownloadError, match="unsafe entry name"):
        safe_member_name(name)


def trickle(n_bytes: int, every: float = 0.05) -> CdnHandler:
    """A CDN answer that promises n_bytes and sends one byte every `every` seconds."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(n_bytes)})
        await response.prepare(request)
        for _ in range(n_bytes):
            await response.write(b"x")
            await asyncio.sleep(every)
        return response

    return handler


async def test_a_trickling_cdn_fails_the_file_and_resume_fetches_it(
    hostile: Hostile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CDN sending a byte every 50 ms never trips a per-read timeout; under --min-rate over
    a --timeout window it fails as too slow, is retried, counts as a failed download (the
    export finishes, exit 1), and --resume fetches it once the CDN is healthy."""
    hostile.add_work(801)
    hostile.add_work(802)
    hostile.links[801] = hostile.cdn_url("/f/801.mp4")
    hostile.links[802] = hostile.cdn_url("/f/802.mp4")
    hostile.cdn["/f/801.mp4"] = trickle(10**6)  # 14 hours at this rate
    hostile.serve("/f/802.mp4", b"v802")
    assert await asyncio.wait_for(export_cli(hostile, tmp_path, "--timeout", "0.3"), 60) == 1
    err = capsys.readouterr().err
    assert "download failed for work 801: CDN too slow" in err and "bytes/s" in err
    assert len(hostile.cdn_headers) == 3  # 801 twice (--max-retries 1), 802 once
    assert files_under(tmp_path / "media") == {"802.mp4"}
    hostile.serve("/f/801.mp4", b"v801")
    argv = ["export", str(tmp_path / "w.jsonl"), "--resume", "--token", TOKEN, "-q"]
    assert await asyncio.to_thread(cli.main, argv) == 0
    assert listing(tmp_path / "media") == {"801.mp4": b"v801", "802.mp4": b"v802"}


async def test_min_rate_zero_lets_a_slow_file_finish(hostile: Hostile, tmp_path: Path) -> None:
    """--min-rate 0 turns the rate check off: a slow but steady file completes."""
    hostile.add_work(811)
    hostile.links[811] = hostile.cdn_url("/f/811.mp4")
    hostile.cdn["/f/811.mp4"] = trickle(12)
    assert await export_cli(hostile, tmp_path, "--timeout", "0.2", "--min-rate", "0") == 0
    assert listing(tmp_path / "media") == {"811.mp4": b"x" * 12}


async def test_a_cdn_trickling_its_headers_fails_the_file(
    hostile: Hostile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Headers sent a byte every 50 ms never trip a per-read timeout either: the head of the
    answer gets --timeout seconds in all, then the file is retried and counted as failed."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(10**6):
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:  # the client gave up: what the test wants
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        hostile.add_work(821)
        hostile.links[821] = f"http://127.0.0.1:{port}/f/821.mp4"
        code = await asyncio.wait_for(export_cli(hostile, tmp_path, "--timeout", "0.3"), 60)
    finally:
        server.close()
        await server.wait_closed()
    assert code == 1
    assert "download failed for work 821: CDN: no response within 0.3 s" in capsys.readouterr().err
    assert files_under(tmp_path / "media") == set()
