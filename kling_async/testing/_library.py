"""A synthetic Kling assets library, generated lazily and deterministically, page by page.

Nothing is materialised up front: a task's content is a pure function of ``(seed, serial)`` and
its content type a pure function of its position, so serving any page costs O(page size) plus
O(log n) for the deletions, whatever the size of the library.

Layout: base tasks have positions ``0 .. tasks - 1`` (0 is the newest) and serials
``tasks - 1 - position`` (0 is the oldest). Tasks inserted later get serials ``tasks, tasks + 1,
...`` and sit above every base task. Ids and times grow with the serial, so the listing is
newest first by ``createTime``, strictly.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
from collections.abc import Iterable
from typing import Any, Final

import msgspec

__all__ = [
    "CONTENT_TYPES",
    "FILE_TYPES",
    "ID_RANGE",
    "OFFSET_MODES",
    "PAST_END_MODES",
    "FakeLibrary",
    "default_id_base",
]

CONTENT_TYPES: Final = ("video", "image", "audio")
"""The values of the ``contentType`` filter."""

FILE_TYPES: Final = {"video": ("MP4",), "image": ("PNG",), "audio": ("MP3", "WAV")}
"""The downloadable file types of a finished work, by content type."""

ID_RANGE: Final = 10**9
"""Ids reserved per library: ``id_base .. id_base + ID_RANGE - 1``."""

OFFSET_MODES: Final = ("served", "asked")
"""How a server that caps the page size counts offsets: by the size served or asked."""

PAST_END_MODES: Final = ("empty", "repeat")
"""What a page past the end holds: an empty history, or the last page again."""


class _Unset:
    """The default of an optional argument whose ``None`` means something."""


_UNSET: Final = _Unset()

_M64: Final = (1 << 64) - 1
_ID_SPAN: Final = 8  # ids per task: the task id, then up to 7 work ids
_MAX_TASKS: Final = 100_000_000  # keeps one account's ids inside its 10**9 id range
_TOP_TIME: Final = 1_744_858_514_499  # createTime of the newest base task (the sample's)
_STEP_MS: Final = 60_000  # createTime distance between tasks; jitter stays below it
_JITTER_MS: Final = 30_000

# Content type by position, repeating: 5 video, 4 image, 1 audio in every 10 tasks. The seed
# rotates it; a filtered page maps ranks to positions with arithmetic alone.
_CYCLE: Final = (
    "video",
    "image",
    "video",
    "image",
    "video",
    "audio",
    "video",
    "image",
    "video",
    "image",
)

_TYPES: Final = {
    "video": ("m2v_txt2video_hq", "m2v_img2video_hq", "m2v_txt2video", "m2v_img2video"),
    "image": ("mmu_txt2img_aiweb", "mmu_img2img_aiweb"),
    "audio": ("m2v_audio_gen", "mmu_txt2audio"),
}
_VIDEO_SIZES: Final = ((1280, 720), (720, 1280), (1268, 724), (1080, 1080))
_IMAGE_SIZES: Final = ((1024, 1024), (1344, 768), (768, 1344), (896, 1152))
_VERSIONS: Final = {
    "video": ("1.6", "2.0", "2.1"),
    "image": ("1.5", "2.0", "2.1"),
    "audio": ("1.0",),
}
_ASCII_SUBJECTS: Final = (
    "A person dancing",
    "A red fox running through fresh snow",
    "Timelapse of clouds over a mountain lake",
    "A cat astronaut floating in a space station",
    "Close-up of rain drops on a window at night",
    "An old lighthouse in a storm, cinematic",
    "A paper boat drifting down a city gutter",
    "Portrait of a robot barista making latte art",
)
_ASCII_STYLES: Final = (
    "35mm film",
    "soft morning light",
    "studio ghibli style",
    "hyperrealistic, 8k",
    "slow motion",
    "watercolor",
)
_UNICODE_PROMPTS: Final = (
    "夜の東京を歩く猫、ネオンの光",
    "桜の木の下で踊る少女、春風",
    "A corgi surfing a giant wave 🌊🐶",
    "Fireworks over the harbour 🎆✨ at midnight",
    "Café au crépuscule, façade rétro à Montréal",
    "Niño jugando fútbol en la playa, atardecer",
    "一只在竹林里打太极的熊猫",
    "Зимний лес на рассвете, туман",
    "Ein Bär, der Käse über Bäume trägt",
    "비 오는 서울 거리, 네온사인 🌧️",
)
_NEGATIVE: Final = ("", "", "", "blurry, low quality", "text, watermark", "distorted hands")
# Constant fragments, pre-encoded (msgspec embeds Raw as is; page() decodes fresh objects).
_EMPTY_MEDIA: Final = msgspec.Raw(
    b'{"resource":"","height":0,"width":0,"duration":0,"resourceKey":""}'
)
_SELF_COMMENT: Final = msgspec.Raw(b'{"rate":0,"tags":[],"content":"","prompts":[]}')
_CDN: Final = "https://s21-kling.klingai.com"


def _mix(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread 64-bit hash of an int (stable across runs)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class _Placement:
    """Where the tasks of one content type (or of all types) sit among the base positions."""

    __slots__ = ("offsets", "period")

    def __init__(self, offsets: tuple[int, ...], period: int) -> None:
        self.offsets = offsets
        self.period = period

    def position(self, rank: int) -> int:
        q, r = divmod(rank, len(self.offsets))
        return q * self.period + self.offsets[r]

    def rank(self, position: int) -> int:
        """The number of positions of this type below ``position``."""
        q, r = divmod(position, self.period)
        return q * len(self.offsets) + bisect.bisect_left(self.offsets, r)


class FakeLibrary:
    """A deterministic, lazily generated Kling assets library for one account.

    Every field of the documented model is present with its documented JSON type. Content
    types repeat 5 video, 4 image (4 works each), 1 audio in every 10 tasks; most works have
    status 99, about 1.5% are still in progress (5 or 10) and about 3% failed (50).

    Thread-safe: every method takes an internal lock, so a server thread can serve pages
    while a test thread inserts or deletes tasks.

    Args:
        tasks: number of history entries (generation tasks) in the library.
        seed: drives every generated value; the same seed gives byte-identical pages.
        non_ascii: fraction (0..1) of tasks whose prompt is non-ASCII (Japanese, emoji,
            accented Latin, ...); ``0`` or ``False`` for ASCII-only prompts.
        id_base: lowest id of this library (ids are ``id_base + 8 * serial + k``); by default
            derived from ``seed``. Give accounts of one server disjoint bases.
        user_id: the account's ``userId``; by default derived from ``seed``.

    Example:
        >>> lib = FakeLibrary(1_000_000, seed=1)
        >>> body = lib.page_bytes(25_000, page_size=40)  # instant, O(page)
    """

    def __init__(
        self,
        tasks: int,
        seed: int = 0,
        *,
        non_ascii: float = 0.25,
        id_base: int | None = None,
        user_id: int | None = None,
    ) -> None:
        if not 0 <= tasks <= _MAX_TASKS:
            raise ValueError(f"tasks must be between 0 and {_MAX_TASKS}, got {tasks}")
        if not 0.0 <= non_ascii <= 1.0:
            raise ValueError(f"non_ascii must be between 0 and 1, got {non_ascii}")
        self.tasks = tasks
        self.seed = seed
        self.non_ascii = float(non_ascii)
        self._key = _mix(seed & _M64)
        self.id_base = id_base if id_base is not None else default_id_base(seed)
        self.user_id = (
            user_id if user_id is not None else 100_000_000 + _mix(self._key ^ 1) % 900_000_000
        )
        self._non_ascii_cut = int(self.non_ascii * 1000)
        rot = self._key % len(_CYCLE)
        cycle = _CYCLE[rot:] + _CYCLE[:rot]
        self._cycle = cycle
        self._all = _Placement(tuple(range(len(cycle))), len(cycle))
        self._by_type = {
            ct: _Placement(tuple(i for i, c in enumerate(cycle) if c == ct), len(cycle))
            for ct in CONTENT_TYPES
        }
        self._lock = threading.RLock()
        # Deleted base tasks: sorted positions, and per type the sorted ranks within the type.
        self._deleted: list[int] = []
        self._deleted_rank: dict[str, list[int]] = {ct: [] for ct in CONTENT_TYPES}
        # Tasks inserted at the head, oldest first (serials), overall and by type.
        self._extras: list[int] = []
        self._extras_by_type: dict[str, list[int]] = {ct: [] for ct in CONTENT_TYPES}
        self._extra_type: dict[int, str] = {}
        self._next_serial = tasks
        self._deleted_items: dict[int, set[int]] = {}  # serial -> deleted workItemIds
        self._status: dict[int, int] = {}  # work id -> status override
        self._pending: set[int] = set()  # work ids inserted with pending=True, not finished
        self._encoder = msgspec.json.Encoder()

    # ------------------------------------------------------------------ geometry

    def content_type_at(self, position: int) -> str:
        """The content type of the base task at ``position`` (0 = newest base task)."""
        return self._cycle[position % len(self._cycle)]

    def _serial_type(self, serial: int) -> str:
        if serial < self.tasks:
            return self.content_type_at(self.tasks - 1 - serial)
        return self._extra_type[serial]

    def _space(self, content_type: str | None) -> tuple[_Placement, list[int], int, list[int]]:
        """(placement, deleted ranks, base size, extras) of the listing for one filter."""
        if content_type is None:
            return self._all, self._deleted, self.tasks, self._extras
        placement = self._by_type[content_type]
        return (
            placement,
            self._deleted_rank[content_type],
            placement.rank(self.tasks),
            self._extras_by_type[content_type],
        )

    def _serials(self, offset: int, limit: int, content_type: str | None) -> list[int]:
        """Serials of the visible tasks ``offset .. offset + limit - 1`` of a listing."""
        placement, deleted, size, extras = self._space(content_type)
        out: list[int] = []
        n_extras = len(extras)
        p = offset
        while p < n_extras and len(out) < limit:
            out.append(extras[n_extras - 1 - p])
            p += 1
        if len(out) == limit:
            return out
        k = max(0, offset - n_extras)
        # The k-th visible rank is k + j, j being the first index with deleted[j] - j > k
        # (deleted[j] - j never decreases): O(log deletions).
        j = bisect.bisect_right(range(len(deleted)), k, key=lambda i: deleted[i] - i)
        rank = k + j
        top = self.tasks - 1
        while len(out) < limit and rank < size:
            if j < len(deleted) and deleted[j] == rank:
                j += 1
                rank += 1
                continue
            out.append(top - placement.position(rank))
            rank += 1
        return out

    def __len__(self) -> int:
        return self.count()

    def count(self, content_type: str | None = None) -> int:
        """Number of visible tasks (history entries), optionally of one content type."""
        _check_content_type(content_type)
        with self._lock:
            _, deleted, size, extras = self._space(content_type)
            return size - len(deleted) + len(extras)

    # ------------------------------------------------------------------ works

    def _locate(self, work_id: int) -> tuple[int, int] | None:
        """(serial, workItemId) of a visible work, or None."""
        off = work_id - self.id_base
        if off <= 0 or off % _ID_SPAN == 0:
            return None
        serial, item = divmod(off, _ID_SPAN)
        item -= 1
        if serial < self.tasks:
            position = self.tasks - 1 - serial
            i = bisect.bisect_left(self._deleted, position)
            if i < len(self._deleted) and self._deleted[i] == position:
                return None
        elif serial not in self._extra_type:
            return None
        if item >= (4 if self._serial_type(serial) == "image" else 1):
            return None
        if item in self._deleted_items.get(serial, ()):
            return None
        return serial, item

    def has_work(self, work_id: int) -> bool:
        """Whether ``work_id`` is a visible (not deleted) work of this library."""
        with self._lock:
            return self._locate(work_id) is not None

    def work_ids_of(self, serial: int) -> list[int]:
        """The visible work ids of the task with this serial."""
        with self._lock:
            n = 4 if self._serial_type(serial) == "image" else 1
            gone = self._deleted_items.get(serial, ())
            base = self.id_base + serial * _ID_SPAN + 1
            return [base + k for k in range(n) if k not in gone]

    def work_status(self, work_id: int) -> int:
        """The current status of a work.

        Raises:
            KeyError: ``work_id`` is not a visible work of this library.
        """
        with self._lock:
            where = self._locate(work_id)
            if where is None:
                raise KeyError(work_id)
            return self._status_of(where[0], work_id)

    def _status_of(self, serial: int, work_id: int) -> int:
        status = self._status.get(work_id)
        if status is not None:
            return status
        return self._base_status(_mix(self._key + serial))

    @staticmethod
    def _base_status(h: int) -> int:
        u = (h >> 20) % 1000
        if u < 15:
            return 5 if u < 8 else 10
        if u < 45:
            return 50
        return 99

    def work_file_types(self, work_id: int) -> tuple[str, ...] | None:
        """The downloadable file types of a work (empty until it succeeds), None if unknown."""
        with self._lock:
            where = self._locate(work_id)
            if where is None:
                return None
            if self._status_of(where[0], work_id) != 99:
                return ()
            return FILE_TYPES[self._serial_type(where[0])]

    # ------------------------------------------------------------------ mutations

    def insert_tasks(
        self, n: int, *, content_type: str | None = None, pending: bool = False
    ) -> list[int]:
        """Add ``n`` tasks at the head, newer than everything (as if just generated).

        Args:
            n: number of tasks to add.
            content_type: ``video``, ``image`` or ``audio``; None follows the usual mix.
            pending: give their works an in-progress status (5) until
                :meth:`set_status` or :meth:`complete_pending`.

        Returns:
            The work ids of the new tasks (an image task contributes 4).
        """
        _check_content_type(content_type)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self._lock:
            new_ids: list[int] = []
            for _ in range(n):
                serial = self._next_serial
                self._next_serial += 1
                ct = content_type or self._cycle[serial % len(self._cycle)]
                self._extras.append(serial)
                self._extras_by_type[ct].append(serial)
                self._extra_type[serial] = ct
                ids = self.work_ids_of(serial)
                # An extra's own status comes from the hash like any task; pin it so fresh
                # inserts are finished unless pending.
                for wid in ids:
                    self._status[wid] = 5 if pending else 99
                if pending:
                    self._pending.update(ids)
                new_ids.extend(ids)
            return new_ids

    def set_status(self, work_id: int, status: int) -> None:
        """Set a work's status (for example 99 to finish an in-progress work).

        Raises:
            KeyError: ``work_id`` is not a visible work of this library.
        """
        with self._lock:
            if self._locate(work_id) is None:
                raise KeyError(work_id)
            self._status[work_id] = status
            if status == 99:
                self._pending.discard(work_id)

    def complete_pending(self) -> list[int]:
        """Finish (status 99) every work inserted with ``pending=True``; returns their ids."""
        with self._lock:
            done = sorted(self._pending)
            for wid in done:
                self._status[wid] = 99
            self._pending.clear()
            return done

    def delete_works(self, work_ids: Iterable[int]) -> list[int]:
        """Delete works; a task whose works are all deleted leaves the listing.

        Later tasks move up: pages after the deleted ones shift back.

        Returns:
            The deleted work ids.

        Raises:
            KeyError: one of the ids is not a visible work (nothing is deleted then).
        """
        with self._lock:
            ids = list(dict.fromkeys(work_ids))
            located = []
            for wid in ids:
                where = self._locate(wid)
                if where is None:
                    raise KeyError(wid)
                located.append(where)
            for serial, item in located:
                gone = self._deleted_items.setdefault(serial, set())
                gone.add(item)
                if len(gone) == (4 if self._serial_type(serial) == "image" else 1):
                    self._delete_task(serial)
            return ids

    def delete_tasks(self, positions: Iterable[int]) -> list[int]:
        """Delete the tasks at these positions of the current unfiltered listing (0 = newest).

        All positions are resolved before anything is deleted.

        Returns:
            The work ids of the deleted tasks.

        Raises:
            IndexError: a position is outside the listing.
        """
        with self._lock:
            serials = []
            for pos in dict.fromkeys(positions):
                found = self._serials(pos, 1, None) if pos >= 0 else []
                if not found:
                    raise IndexError(pos)
                serials.append(found[0])
            removed: list[int] = []
            for serial in serials:
                removed.extend(self.work_ids_of(serial))
                self._delete_task(serial)
            return removed

    def _delete_task(self, serial: int) -> None:
        self._deleted_items.pop(serial, None)
        if serial < self.tasks:
            position = self.tasks - 1 - serial
            bisect.insort(self._deleted, position)
            ct = self.content_type_at(position)
            bisect.insort(self._deleted_rank[ct], self._by_type[ct].rank(position))
        else:
            ct = self._extra_type.pop(serial)
            self._extras.remove(serial)
            self._extras_by_type[ct].remove(serial)

    # ------------------------------------------------------------------ pages

    def page(
        self, page_num: int = 1, page_size: int = 40, content_type: str | None = None
    ) -> dict[str, Any]:
        """One page of ``GET /assets/``: the full response body as plain Python data.

        The result is decoded from :meth:`page_bytes`, so it holds exactly the JSON types a
        client receives, and no object is shared with any other page.

        Args:
            page_num: 1-based page number.
            page_size: history entries (tasks, not works) per page.
            content_type: ``video``, ``image``, ``audio`` or None for all.

        Raises:
            ValueError: ``page_num`` or ``page_size`` below 1, or an unknown content type.
        """
        result: dict[str, Any] = msgspec.json.decode(
            self.page_bytes(page_num, page_size, content_type)
        )
        return result

    def page_bytes(
        self,
        page_num: int = 1,
        page_size: int = 40,
        content_type: str | None = None,
        *,
        cap: int | None = None,
        offsets: str = "served",
        past_end: str = "empty",
        clock: int | _Unset | None = _UNSET,
    ) -> bytes:
        """Like :meth:`page`, as the JSON bytes the fake server sends (msgspec-encoded).

        Args:
            cap: Serve at most this many entries per page (the API documents no maximum).
            offsets: With ``cap``, count offsets by the size ``"served"`` or ``"asked"``
                (then the rest of each asked page is never served).
            past_end: ``"empty"`` (as documented) or ``"repeat"`` (serve the last page
                again, as a proxy might).
            clock: ``currentTimestamp`` of every entry; ``None`` leaves it out. By default,
                a minute after the newest work.
        """
        if page_num < 1 or page_size < 1:
            raise ValueError("page_num and page_size must be >= 1")
        if offsets not in OFFSET_MODES:
            raise ValueError(f"offsets must be one of {OFFSET_MODES}, got {offsets!r}")
        if past_end not in PAST_END_MODES:
            raise ValueError(f"past_end must be one of {PAST_END_MODES}, got {past_end!r}")
        _check_content_type(content_type)
        served = min(page_size, cap) if cap else page_size
        step = served if offsets == "served" else page_size
        with self._lock:
            serials = self._serials((page_num - 1) * step, served, content_type)
            if not serials and past_end == "repeat" and page_num > 1:
                total = self.count(content_type)
                if total:
                    last = (total - 1) // step * step
                    serials = self._serials(last, served, content_type)
            if isinstance(clock, _Unset):
                now: int | None = self._create_time(max(self._next_serial - 1, 0)) + _STEP_MS
            else:
                now = clock
            history = [self._entry(s, now) for s in serials]
        return self._encoder.encode(self._envelope(history))

    # ------------------------------------------------------------------ content

    def _create_time(self, serial: int) -> int:
        jitter = _mix(self._key ^ (serial * 0x2545F4914F6CDD1D & _M64)) % _JITTER_MS
        return _TOP_TIME - (self.tasks - 1 - serial) * _STEP_MS + jitter

    def _prompt(self, h: int) -> str:
        if (h >> 40) % 1000 < self._non_ascii_cut:
            return _UNICODE_PROMPTS[(h >> 12) % len(_UNICODE_PROMPTS)]
        subject = _ASCII_SUBJECTS[(h >> 12) % len(_ASCII_SUBJECTS)]
        return f"{subject}, {_ASCII_STYLES[(h >> 16) % len(_ASCII_STYLES)]}"

    def _inputs(self, kind: str, serial: int, h: int) -> list[dict[str, Any]]:
        if kind not in ("m2v_img2video_hq", "m2v_img2video", "mmu_img2img_aiweb", "m2v_audio_gen"):
            return []
        v = (h >> 48) % 3
        ext = "mp4" if kind == "m2v_audio_gen" else "jpg"
        url = f"{_CDN}/upload-ylab-stunt/{h & 0xFFFFFFFF:08x}{serial:x}.{ext}"
        older = serial - 1 - (h >> 8) % 50
        if v == 0 or older < 0:  # uploaded by URL: everything null, as in the sample
            extra: dict[str, Any] = {
                "token": None,
                "blobStorage": None,
                "url": url,
                "cover": None,
                "fromWorkId": None,
                "fromUploadId": None,
            }
        elif v == 1:  # an upload of the user's
            extra = {
                "token": f"upload-{(h >> 4) & 0xFFFFFFFFFF:010x}",
                "blobStorage": "ks3",
                "url": url,
                "cover": None,
                "fromWorkId": None,
                "fromUploadId": 50_000_000 + (h >> 24) % 10_000_000,
            }
        else:  # one of the user's earlier works
            extra = {
                "token": None,
                "blobStorage": None,
                "url": url,
                "cover": f"{_CDN}/ai-platform/cover-{older:x}.jpg",
                "fromWorkId": self.id_base + older * _ID_SPAN + 1,
                "fromUploadId": None,
            }
        name = "video" if kind == "m2v_audio_gen" else "input"
        return [{"name": name, "inputType": "URL", **extra}]

    def _entry(self, serial: int, now: int | None) -> dict[str, Any]:
        h = _mix(self._key + serial)
        h2 = _mix(h)
        ct = self._serial_type(serial)
        kinds = _TYPES[ct]
        kind = kinds[h2 % len(kinds)]
        task_id = self.id_base + serial * _ID_SPAN
        created = self._create_time(serial)
        is_image = ct == "image"
        if ct == "video":
            width, height = _VIDEO_SIZES[(h >> 4) % len(_VIDEO_SIZES)]
            seconds = 10 if (h >> 7) & 3 == 0 else 5
        elif is_image:
            width, height = _IMAGE_SIZES[(h >> 4) % len(_IMAGE_SIZES)]
            seconds = 0
        else:
            width = height = 0
            seconds = 10 if (h >> 7) & 3 == 0 else 5
        versions = _VERSIONS[ct]
        arguments = [
            {"name": "prompt", "value": self._prompt(h)},
            {"name": "negative_prompt", "value": _NEGATIVE[(h >> 28) % len(_NEGATIVE)]},
        ]
        if is_image:
            arguments.append({"name": "imageCount", "value": "4"})
            arguments.append({"name": "aspect_ratio", "value": f"{width}:{height}"})
        else:
            arguments.append({"name": "duration", "value": str(seconds)})
        arguments.append({"name": "kling_version", "value": versions[(h >> 32) % len(versions)]})
        e = (h2 >> 8) % 4
        extra_args: dict[str, Any] = (
            {}
            if e < 2
            else {"seed": int((h2 >> 16) % 2**31), "cfg": 0.5}
            if e == 2
            else {"preferMultiShots": False, "enableAudio": bool(h2 & 1)}
        )
        # Encoded once and embedded raw: works and task carry the same taskInfo.
        task_info = msgspec.Raw(
            self._encoder.encode(
                {
                    "type": kind,
                    "inputs": self._inputs(kind, serial, h),
                    "arguments": arguments,
                    "extraArgs": extra_args,
                    "callbackPayloads": [],
                    "scene": "NORMAL_CREATION",
                }
            )
        )
        gone = self._deleted_items.get(serial, ())
        ext = "png" if is_image else "mp4" if ct == "video" else "mp3"
        path = f"{_CDN}/ai-platform/{h2 & 0xFFFFFFFFFFFF:012x}"
        watermark = ct != "audio"
        works = []
        task_status = 99
        overrides = self._status
        base_status = self._base_status(h)
        for item in range(4 if is_image else 1):
            if item in gone:
                continue
            work_id = task_id + 1 + item
            status = overrides.get(work_id, base_status) if overrides else base_status
            task_status = min(task_status, status)
            done = status == 99
            work_created = created + 16 + item
            resource: Any
            cover: Any
            if done:
                resource = {
                    "resource": f"{path}/{work_id}.{ext}",
                    "height": height,
                    "width": width,
                    "duration": seconds * 1000 + 41 if seconds else 0,
                    "resourceKey": "" if (h >> 50) & 1 else f"{h2 >> 20:011x}",
                }
                cover = (
                    {
                        "resource": f"{path}/{work_id}-cover.jpg",
                        "height": height,
                        "width": width,
                        "duration": 0,
                        "resourceKey": "",
                    }
                    if width
                    else _EMPTY_MEDIA
                )
                file_types = [{"type": ft, "watermark": watermark} for ft in FILE_TYPES[ct]]
            else:
                resource = _EMPTY_MEDIA
                cover = _EMPTY_MEDIA
                file_types = []
            favored = (h >> (52 + item)) & 7 == 0
            published = done and (h2 >> (40 + item)) & 15 == 0
            works.append(
                {
                    "workId": work_id,
                    "workItemId": item,
                    "taskId": task_id,
                    "userId": self.user_id,
                    "type": kind,
                    "status": status,
                    "contentType": ct,
                    "resource": resource,
                    "cover": cover,
                    "starNum": 0,
                    "cloneCount": (h2 >> 30) % 3 if published else 0,
                    "reportNum": 0,
                    "createTime": work_created,
                    "taskInfo": task_info,
                    "selfAttitude": "like" if favored else "unknown",
                    "selfComment": _SELF_COMMENT,
                    "favored": favored,
                    "starred": False,
                    "publishStatus": "published" if published else "unpublished",
                    "deleted": False,
                    "publishTime": work_created + 3_600_000 if published else 0,
                    "submitTime": work_created,
                    "lipSyncStatus": 99 if ct == "video" else 0,
                    "downloadInfo": {"fileTypes": file_types},
                    "allowPublish": done and ct != "audio",
                }
            )
        running = task_status in (5, 10)
        updated = created + 60_000 + (h2 >> 12) % 240_000
        viewed = not running and (h >> 3) & 3 != 0
        eta = 30 + (h2 >> 4) % 300 if running else 0
        entry = {
            "works": works,
            "task": {
                "id": task_id,
                "userId": self.user_id,
                "type": kind,
                "scene": "NORMAL_CREATION",
                "status": task_status,
                "taskInfo": task_info,
                "favored": False,
                "deleted": False,
                "viewed": viewed,
                "createTime": created,
                "updateTime": created + 1_000 if running else updated,
                "viewTime": updated + 45_000 if viewed else 0,
            },
            "etaTime": eta,
            "etaTimeOverSla": False,
            "queuingEtaTime": eta // 3,
            "originEtaTime": eta,
            "originQueuingEtaTime": eta // 3,
            "currentTimestamp": now,
        }
        if now is None:
            del entry["currentTimestamp"]
        return entry

    def _envelope(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        k = self._key
        order = str(100_000_000 + k % 900_000_000)
        start = _TOP_TIME - 777_000_000 + (k >> 8) % 86_400_000
        end = start + 2_678_400_000
        spent = (k >> 16) % 200_000
        return {
            "limitations": [
                {"type": t, "remaining": 10_000 - (k >> s) % 100, "limit": 10_000}
                for t, s in (
                    ("mmu_txt2img_aiweb", 3),
                    ("m2v_txt2video_hq", 5),
                    ("m2v_img2video_hq", 7),
                )
            ],
            "history": history,
            "userPoints": {
                "points": [
                    {
                        "orderId": order,
                        "type": "plan",
                        "amount": 300_000,
                        "balance": 300_000 - spent,
                        "startTime": start,
                        "endTime": end,
                    }
                ],
                "total": 300_000 - spent,
            },
            "userTickets": {
                "ticket": [
                    {
                        "orderId": order,
                        "type": t,
                        "packageType": "reward",
                        "amount": n,
                        "balance": n - (k >> (20 + n)) % (n + 1),
                        "startTime": start,
                        "endTime": end,
                    }
                    for t, n in (("priority", 1), ("extend", 2), ("hq_5s", 3))
                ]
            },
        }

    # ------------------------------------------------------------------ files

    @staticmethod
    def file_bytes(work_id: int, file_type: str, size: int = 4096) -> bytes:
        """The deterministic content the fake CDN serves for one file of a work.

        It starts with ``KLINGFAKE <workId>.<ext>`` and is padded to ``size`` bytes.
        """
        head = f"KLINGFAKE {work_id}.{file_type.lower()}\n".encode()
        pad = hashlib.sha256(head).digest()
        reps = size // len(pad) + 2
        return (head + pad * reps)[:size]


def default_id_base(seed: int, account: int = 0) -> int:
    """The default ``id_base`` of a library: ids of 12-13 digits, disjoint per account."""
    slot = (_mix(_mix(seed & _M64)) + account) % 9000
    return (100 + slot) * ID_RANGE


def _check_content_type(content_type: str | None) -> None:
    if content_type is not None and content_type not in CONTENT_TYPES:
        raise ValueError(f"unknown content type {content_type!r}; use one of {CONTENT_TYPES}")
