"""A one-line progress bar for a collection: files done of all, files/s, failures (stderr).

Shown when stderr is a terminal or when asked (``--progress``); never mixed into stdout, so
piped results stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

REFRESH_SECONDS = 0.2


class Progress:
    def __init__(self, total: int, *, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.done, self.failed = total, 0, 0
        self.start = time.perf_counter()
        self._shown = 0.0

    def update(self, *, failed: bool = False) -> None:
        self.done += 1
        self.failed += failed
        now = time.perf_counter()
        if self.enabled and (now - self._shown >= REFRESH_SECONDS or self.done == self.total):
            self._shown = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} files, "
            f"{self.done / elapsed:.2f} files/s{failed}"
        )

    def note(self, text: str) -> None:
        """A line of its own (a failed file), above the bar."""
        self.stream.write(("\r\x1b[K" if self.enabled else "") + text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()
