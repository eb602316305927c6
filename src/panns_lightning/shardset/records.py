"""What every dataset reader yields and what it reports: the records the shard writer converts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ClipRecord:
    """One clip to convert: where its audio is and which classes it carries.

    ``meta`` holds extra JSON fields stored next to the labels (e.g. ``fold``); ``source`` is the
    path written into the shard's json (defaults to ``audio_path``), so readers can store a path
    relative to the dataset root rather than this machine's absolute path. ``segment`` is
    ``(start, end)`` in seconds (``end`` may be None: to the clip length) when only part of the
    file is the clip, e.g. a CSV row with ``start``/``end`` columns; None: from the file's start.
    """

    key: str
    audio_path: str | os.PathLike
    labels: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    segment: tuple[float, float | None] | None = None

    @property
    def source_text(self) -> str:
        return self.source if self.source is not None else str(self.audio_path)


@dataclass(frozen=True)
class SkippedClip:
    """A clip left out of the shards, with where it came from and why (the manifest's ``skipped``)."""

    key: str
    source: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "source": self.source, "reason": self.reason}


@dataclass
class ReaderResult:
    """A reader's output: usable records, clips it had to skip, and non-fatal warnings."""

    records: list[ClipRecord] = field(default_factory=list)
    skipped: list[SkippedClip] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
