"""Where ``kling-async sync`` puts a work's files: the ``--path-template`` and its sanitising.

Plain functions, no I/O. A template such as the default
``{created:%Y/%Y-%m}/{created:%Y%m%d-%H%M%S}_{work_id}`` names a path relative to the
archive directory, without extension; the media file adds ``.mp4`` (…), the sidecars
``.json`` and ``.txt``.

* Every string a work brings (``prompt``, ``type``, ``content_type``, ``email``) is sanitised:
  path separators and control characters become ``_`` (line breaks and tabs a space), runs of
  dots collapse to one, leading and trailing dots and spaces go, and an absent or empty value
  becomes ``none``. So no value can add a directory, climb out with ``..`` or hide a file.
* Each path component stays within :data:`MAX_COMPONENT_BYTES` bytes of UTF-8, the last one
  with the longest suffix (``.json``) included: ``prompt`` is cut on a character boundary to
  fit, the other strings are capped at :data:`FIELD_BYTES`.
* A template is refused before any request when it is absolute, climbs out (``..``), has an
  empty or hidden (``.``) component, lacks ``{work_id}`` (two works would share a name), names
  an unknown field, or cannot fit its components in 255 bytes even with an empty prompt.

``created`` is the work's ``createTime`` as a UTC datetime (1970-01-01 when absent), formatted
with the strftime format after the colon (``%Y-%m-%d`` without one).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Final

from .models import Work

__all__ = [
    "DEFAULT_TEMPLATE",
    "FIELDS",
    "FIELD_BYTES",
    "MAX_COMPONENT_BYTES",
    "PathTemplate",
    "TemplateError",
    "cut_utf8",
    "sanitize",
    "work_fields",
]

DEFAULT_TEMPLATE: Final = "{created:%Y/%Y-%m}/{created:%Y%m%d-%H%M%S}_{work_id}"
FIELDS: Final = (
    "work_id",
    "task_id",
    "created",
    "content_type",
    "type",
    "status",
    "email",
    "prompt",
)
MAX_COMPONENT_BYTES: Final = 255
#: The longest suffix a name gets: the ``.json`` sidecar (media extensions are shorter).
SUFFIX_BYTES: Final = len(".json")
#: The most bytes a string field other than ``prompt`` keeps.
FIELD_BYTES: Final = 64
ABSENT: Final = "none"

_INT_FIELDS: Final = frozenset({"work_id", "task_id", "status"})
_SPACES: Final = re.compile(r"\s+")
_DOTS: Final = re.compile(r"\.{2,}")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FORMATTER: Final = string.Formatter()


class TemplateError(ValueError):
    """A path template that is refused, or a name it cannot make (one line saying why)."""


def cut_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` bytes of UTF-8, on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max(0, max_bytes)].decode("utf-8", "ignore")


def _clean_char(ch: str) -> str:
    if ch in "/\\":
        return "_"
    if ch in "\t\n\r\v\f\x85\u2028\u2029":
        return " "
    category = unicodedata.category(ch)
    if category in ("Cc", "Cs"):  # control characters; lone surrogates cannot be encoded
        return "_"
    return ch


def sanitize(value: object, *, max_bytes: int | None = FIELD_BYTES) -> str:
    """A value as one safe path component part (see the module docstring)."""
    if value is None:
        return ABSENT
    text = "".join(_clean_char(ch) for ch in str(value))
    text = _DOTS.sub(".", _SPACES.sub(" ", text)).strip(" .")
    if max_bytes is not None:
        text = cut_utf8(text, max_bytes).strip(" .")
    return text or ABSENT


def work_fields(work: Work, email: str | None) -> dict[str, object]:
    """The template fields of a work (``email``: the account it came from, or None)."""
    created = work.created_at or _EPOCH
    return {
        "work_id": work.work_id,
        "task_id": work.task_id,
        "created": created,
        "content_type": work.content_type,
        "type": work.type,
        "status": work.status,
        "email": email,
        "prompt": work.prompt,
    }


def _sample_fields(prompt: str) -> dict[str, object]:
    """Worst-case values: the longest strings a field can keep, large ids."""
    long = "x" * FIELD_BYTES
    return {
        "work_id": 10**18,
        "task_id": 10**18,
        "created": datetime(2099, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
        "content_type": long,
        "type": long,
        "status": 10**9,
        "email": long,
        "prompt": prompt,
    }


class PathTemplate:
    """A checked ``--path-template``; :meth:`render` names a work's files.

    Raises:
        TemplateError: The template is refused (see the module docstring).
    """

    def __init__(self, text: str = DEFAULT_TEMPLATE) -> None:
        self.text = text
        if not text.strip():
            raise TemplateError("the path template is empty")
        if text.startswith(("/", "~")) or re.match(r"[A-Za-z]:", text):
            raise TemplateError(f"the path template {text!r} is absolute; make it relative")
        try:
            parsed = list(_FORMATTER.parse(text))
        except ValueError as exc:
            raise TemplateError(f"bad path template {text!r}: {exc}") from None
        names: list[str] = []
        for literal, name, _spec, conversion in parsed:
            if "\\" in literal or any(unicodedata.category(c) == "Cc" for c in literal):
                raise TemplateError(
                    "the path template holds a backslash or a control character; "
                    "use / between folders"
                )
            if name is None:
                continue
            if name not in FIELDS:
                raise TemplateError(
                    f"unknown field {{{name}}} in the path template; use {', '.join(FIELDS)}"
                )
            if conversion is not None:
                raise TemplateError(f"no conversion (!{conversion}) allowed in {{{name}}}")
            names.append(name)
        if "work_id" not in names:
            raise TemplateError(
                "the path template needs {work_id}: without it two works could share a name"
            )
        self._parsed = parsed
        self.uses_prompt = "prompt" in names
        # The structure (folders, fixed text, formats) is checked once, on worst-case values.
        self._render(_sample_fields(""))

    def __repr__(self) -> str:
        return f"PathTemplate({self.text!r})"

    def _format(self, fields: Mapping[str, object], prompt_bytes: int | None) -> str:
        out: list[str] = []
        for literal, name, spec, _conversion in self._parsed:
            out.append(literal)
            if name is None:
                continue
            value = fields[name]
            if name == "created":
                assert isinstance(value, datetime)
                out.append(value.strftime(spec) if spec else value.strftime("%Y-%m-%d"))
                continue
            if name in _INT_FIELDS and value is not None:
                text = format(value, spec or "")
            else:
                if name == "prompt":
                    value = sanitize(value, max_bytes=None)
                    if prompt_bytes is not None:
                        value = sanitize(cut_utf8(value, prompt_bytes), max_bytes=None)
                else:
                    value = sanitize(value)
                text = format(value, spec or "")
            # A format spec may pad with any character: sanitise what it made, too.
            out.append(sanitize(text, max_bytes=None) if text else ABSENT)
        return "".join(out)

    @staticmethod
    def _too_long(parts: list[str]) -> bool:
        last = len(parts) - 1
        return any(
            len(p.encode("utf-8")) + (SUFFIX_BYTES if i == last else 0) > MAX_COMPONENT_BYTES
            for i, p in enumerate(parts)
        )

    def _render(self, fields: Mapping[str, object]) -> str:
        try:
            path = self._format(fields, None)
            parts = path.split("/")
            if self._too_long(parts) and self.uses_prompt:
                # The longest prompt that fits, on a character boundary (binary search).
                full = len(sanitize(fields["prompt"], max_bytes=None).encode("utf-8"))
                lo, hi = 0, full
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if self._too_long(self._format(fields, mid).split("/")):
                        hi = mid - 1
                    else:
                        lo = mid
                path = self._format(fields, lo)
                parts = path.split("/")
        except (ValueError, TypeError) as exc:
            raise TemplateError(f"bad path template {self.text!r}: {exc}") from None
        for part in parts:
            if part in ("", ".", "..") or part.startswith("."):
                raise TemplateError(
                    f"the path template {self.text!r} makes an empty, hidden or '..' folder "
                    f"or name ({path!r})"
                )
        if self._too_long(parts):
            raise TemplateError(
                f"the path template {self.text!r} makes names longer than "
                f"{MAX_COMPONENT_BYTES} bytes"
            )
        return path

    def render(self, work: Work, email: str | None = None) -> str:
        """The work's path, relative to the archive, without extension (``/`` between folders).

        Raises:
            TemplateError: No safe name can be made (a strftime format that fails, say).
        """
        return self._render(work_fields(work, email))
