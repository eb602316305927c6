"""The train stream's shuffle buffer: bounded, fed copies of undecoded clips at their due positions."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Sequence

import numpy as np

from panns_lightning.data.stream import RawClip


class RepeatShuffleBuffer:
    """A bounded shuffle buffer of undecoded clips, fed copies of clips at their due positions.

    ``source`` yields ``(clip, dues, position)``: the clip read at stream ``position`` (cumulative
    E) and the positions at which its copies fall due. A copy becomes drawable once the stream has
    been read up to its due position, and drawable copies are handed out in the order of due
    position plus a random jitter in ``[0, jitter)``: a shuffle within a window of about
    ``capacity`` draws, in which no copy waits much longer than the window (a uniform pick from
    the buffer would let the copies of a rare clip, one per batch, pile up behind each other and
    be lost at the epoch's end). ``next(avoid)`` skips keys in ``avoid`` (already in the batch)
    when it can, keeping ``capacity`` copies drawable. A ``None`` from ``source`` marks the end of
    the epoch's share: held-back copies are released at once and the source is read further only
    when nothing is left.
    """

    def __init__(
        self,
        source: Iterator[tuple[RawClip, Sequence[float], float] | None],
        *,
        capacity: int,
        jitter: float,
        rng: np.random.Generator,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"shuffle buffer capacity must be >= 1, got {capacity}")
        self._source = source
        self._capacity = capacity
        self._jitter = max(jitter, 0.0)
        self._rng = rng
        self._ready: list[tuple[float, int, RawClip]] = []  # (due + jitter, tie-breaker, clip), a heap
        self._pending: list[tuple[float, int, RawClip]] = []  # (due position, tie-breaker, clip), a heap
        self._tiebreak = itertools.count()
        self._exhausted = False
        self._paused = False

    def __len__(self) -> int:
        """Copies drawable now (held-back ones not counted)."""
        return len(self._ready)

    def next(self, avoid: set[str] | frozenset[str] = frozenset()) -> RawClip | None:
        """The next drawable copy whose key is not in ``avoid`` if any; None once a finite source is used up."""
        self._fill()
        if not self._ready:
            return None
        clip = self._pop_avoiding(avoid)
        while clip is None and self._paused and not self._exhausted:
            self._read_one()  # the epoch's share is used up, but a repeat in the batch is worse
            clip = self._pop_avoiding(avoid)
        if clip is None:
            clip = heapq.heappop(self._ready)[2]  # only keys already in the batch: repeat
        return clip

    def _pop_avoiding(self, avoid: set[str] | frozenset[str]) -> RawClip | None:
        skipped = []
        found = None
        while self._ready:
            entry = heapq.heappop(self._ready)
            if entry[2].key not in avoid:
                found = entry[2]
                break
            skipped.append(entry)
        for entry in skipped:
            heapq.heappush(self._ready, entry)
        return found

    def _fill(self) -> None:
        if self._paused and not self._ready:
            self._release_all()
        while not self._exhausted and (
            len(self._ready) < self._capacity if not self._paused else not (self._ready or self._pending)
        ):
            try:
                item = next(self._source)
            except StopIteration:
                self._exhausted = True
                break
            if item is None:
                # The epoch's share of the stream is read: hand out what is held back, read more only if dry.
                self._paused = True
                self._release_all()
                continue
            self._admit(*item)
        if self._exhausted and not self._ready and self._pending:
            self._release_all()  # a finite source has ended: release held-back copies rather than lose them

    def _read_one(self) -> None:
        for item in self._source:
            if item is not None:
                self._admit(*item)
                self._release_all()
                return
        self._exhausted = True

    def _release_all(self) -> None:
        while self._pending:
            due, _, clip = heapq.heappop(self._pending)
            self._make_ready(due, clip)

    def _make_ready(self, due: float, clip: RawClip) -> None:
        order = due + float(self._rng.random()) * self._jitter
        heapq.heappush(self._ready, (order, next(self._tiebreak), clip))

    def _admit(self, clip: RawClip, dues: Sequence[float], position: float) -> None:
        for due in dues:
            if due <= position:
                self._make_ready(due, clip)
            else:
                heapq.heappush(self._pending, (due, next(self._tiebreak), clip))
        while self._pending and self._pending[0][0] <= position:
            due, _, clip = heapq.heappop(self._pending)
            self._make_ready(due, clip)
