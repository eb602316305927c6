"""Lines of a CSV someone else wrote, each of bounded length, for ``csv.reader`` / ``csv.DictReader``.

A file object yields whole lines however long they are, so one line of a few GB without a
newline would be read into memory before the csv module could refuse it (its own limit is
128 KiB per field). :class:`BoundedLines` reads at most :data:`MAX_LINE_CHARS` at a time; a
longer line is read on in pieces, dropped, and replaced by a row holding :data:`TOO_LONG`, which
the reader reports as that row's problem. Line numbers stay those of the file.
"""

from __future__ import annotations

from typing import TextIO

MAX_LINE_CHARS = 1 << 20
"""Characters per physical line (1 Mi): a CSV row of file names and labels is far shorter."""
TOO_LONG = "\x00line over 1 MiB\x00"
"""The text that replaces a dropped line; a reader finding it in a row skips that row."""


class BoundedLines:
    """Iterate ``handle``'s lines, each at most :data:`MAX_LINE_CHARS` long (see the module docstring)."""

    def __init__(self, handle: TextIO, limit: int = MAX_LINE_CHARS) -> None:
        self.handle = handle
        self.limit = limit

    def __iter__(self) -> BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.handle.readline(self.limit + 1)
        if not line:
            raise StopIteration
        if len(line) <= self.limit or line.endswith("\n"):
            return line
        while True:  # the rest of the overlong line, a piece at a time
            rest = self.handle.readline(self.limit)
            if not rest or rest.endswith("\n"):
                return TOO_LONG + "\n"


def holds_too_long(values: object) -> bool:
    """Whether a parsed row (a list or dict of cells) came from a dropped line."""
    cells = values.values() if isinstance(values, dict) else values
    return any(isinstance(cell, str) and TOO_LONG in cell for cell in cells or ())  # type: ignore[union-attr]
