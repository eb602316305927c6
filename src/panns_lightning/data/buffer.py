"""The train stream's shuffle buffer: bounded, fed copies of undecoded clips at their due positions."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from panns_lightning.data.tar_reader import RawClip

# A drawable copy: [order (due + jitter), tie-breaker, clip, live, heaps it sits in]. A list, not a
# tuple, so that a copy drawn through one heap can be marked dead in the others (lazy deletion);
# lists compare by order, then by the unique tie-breaker, never by clip.
_Entry = list


@dataclass(frozen=True)
class ClassStrata:
    """How the buffer stratifies batches by class, as PANNs' round robin does.

    Attributes:
        classes: the class ids a batch walks through, in a fresh random order each time all were
            walked (PANNs' queue of classes); classes without clips should be left out.
        anchor_weights: per class id, the weight with which a copy of a clip carrying that class is
            drawn at that class's turn (its *anchor*). ``1 / n_c`` makes a class anchor as many
            draws as the others, which is PANNs' draw: class first, then one of its clips.
        max_delay: positions (as due positions count them) a drawable copy may fall behind the
            read head before it is drawn ahead of its class's turn, so that no copy waits for long.
    """

    classes: tuple[int, ...]
    anchor_weights: tuple[float, ...]
    max_delay: float


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
    when nothing is left, or to avoid a repeat in the batch while fewer than ``capacity`` copies
    are drawable and ``avoid`` holds fewer than ``distinct_keys`` (the clips the source can
    bring, when known): a set smaller than a batch repeats keys rather than being read for ever.

    With ``strata`` (:class:`ClassStrata`) only the order among drawable copies changes: each copy
    gets an anchor class among its labels (weighted by ``anchor_weights``), and each draw takes the
    next class from a shuffled queue of classes and hands out that class's earliest drawable copy
    (in the order above), or the earliest copy of any class when it has none. A copy that fell more
    than ``max_delay`` behind the read head is handed out first. So consecutive draws anchor
    different classes, as in PANNs' sampler, and with fewer classes than a batch holds nearly
    every class is in every batch; which copies are drawable, and so the counts, are unchanged.
    """

    def __init__(
        self,
        source: Iterator[tuple[RawClip, Sequence[float], float] | None],
        *,
        capacity: int,
        jitter: float,
        rng: np.random.Generator,
        strata: ClassStrata | None = None,
        distinct_keys: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"shuffle buffer capacity must be >= 1, got {capacity}")
        self._source = source
        self._capacity = capacity
        self._jitter = max(jitter, 0.0)
        self._rng = rng
        self._ready: list[_Entry] = []  # drawable copies (and, stratified, dead ones not yet popped), a heap
        self._live = 0  # drawable copies
        self._pending: list[tuple[float, int, RawClip]] = []  # (due position, tie-breaker, clip), a heap
        self._tiebreak = itertools.count()
        self._exhausted = False
        self._paused = False
        self._distinct_keys = distinct_keys
        self._strata = strata
        if strata is not None:
            self._by_class: dict[int, list[_Entry]] = {klass: [] for klass in strata.classes}
            self._anchor_weights = list(strata.anchor_weights)
            self._queue: list[int] = []
            self._head = -np.inf  # the position read up to
            self._dead = 0  # references to drawn copies still in a heap

    def __len__(self) -> int:
        """Copies drawable now (held-back ones not counted)."""
        return self._live

    def references(self) -> int:
        """Entries the drawable heaps hold, drawn copies not yet dropped included: what the buffer's memory grows with.

        Unstratified, ``len(self)``; stratified, each drawable copy sits in two heaps and a drawn one
        may linger in the other until compaction, so at most about ``3 * len(self) + 64``.
        """
        held = len(self._ready)
        if self._strata is not None:
            held += sum(len(heap) for heap in self._by_class.values())
        return held

    def next(self, avoid: set[str] | frozenset[str] = frozenset()) -> RawClip | None:
        """The next drawable copy whose key is not in ``avoid`` if any; None once a finite source is used up."""
        self._fill()
        if not self._live:
            return None
        klass = self._next_class() if self._strata is not None else None
        clip = self._take(avoid, klass)
        # The epoch's share is used up, but a repeat in the batch is worse: read on, unless every
        # clip there is is in the batch already, and only while the buffer has room. A set with
        # fewer (readable) clips than a batch has none outside ``avoid``: reading on would never end.
        read_on = self._distinct_keys is None or len(avoid) < self._distinct_keys
        while clip is None and read_on and self._paused and not self._exhausted and self._live < self._capacity:
            self._read_one()
            clip = self._take(avoid, klass)
        if clip is None:
            clip = self._pop_avoiding(self._ready, frozenset())  # only keys already in the batch: repeat
        assert clip is not None
        return clip

    def _take(self, avoid: set[str] | frozenset[str], klass: int | None) -> RawClip | None:
        if klass is None:
            return self._pop_avoiding(self._ready, avoid)
        assert self._strata is not None
        ready = self._ready
        self._drop_dead(ready)
        if ready and ready[0][0] < self._head - self._strata.max_delay and ready[0][2].key not in avoid:
            return self._pop_avoiding(ready, avoid)  # waited too long: ahead of its class's turn
        heap = self._by_class.get(klass)
        clip = self._pop_avoiding(heap, avoid) if heap else None
        return clip if clip is not None else self._pop_avoiding(ready, avoid)

    def _next_class(self) -> int:
        if not self._queue:
            assert self._strata is not None
            # Reversed so that pop() from the end walks the permutation front to back.
            self._queue = self._rng.permutation(np.asarray(self._strata.classes, dtype=np.int64))[::-1].tolist()
        return self._queue.pop()

    def _pop_avoiding(self, heap: list[_Entry], avoid: set[str] | frozenset[str]) -> RawClip | None:
        """Pop the earliest live copy in ``heap`` whose key is not in ``avoid`` (dead ones met are dropped)."""
        skipped = []
        found = None
        while heap:
            entry = heapq.heappop(heap)
            if not entry[3]:
                self._dead -= 1
                continue
            if entry[2].key not in avoid:
                found = entry
                break
            skipped.append(entry)
        for entry in skipped:
            heapq.heappush(heap, entry)
        if found is None:
            return None
        found[3] = False
        self._live -= 1
        if found[4] > 1:
            self._dead += found[4] - 1  # its references in the other heaps
            self._compact()
        return found[2]

    def _drop_dead(self, heap: list[_Entry]) -> None:
        while heap and not heap[0][3]:
            heapq.heappop(heap)
            self._dead -= 1

    def _compact(self) -> None:
        """Rebuild the heaps without dead entries once they outnumber the live ones (memory stays bounded)."""
        if self._dead <= self._live + 64:
            return
        self._ready = [entry for entry in self._ready if entry[3]]
        heapq.heapify(self._ready)
        for klass, heap in self._by_class.items():
            if heap:
                live = [entry for entry in heap if entry[3]]
                heapq.heapify(live)
                self._by_class[klass] = live
        self._dead = 0

    def _fill(self) -> None:
        if self._paused and not self._live:
            self._release_all()
        while not self._exhausted and (
            self._live < self._capacity if not self._paused else not (self._live or self._pending)
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
        if self._exhausted and not self._live and self._pending:
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
        entry: _Entry = [order, next(self._tiebreak), clip, True, 1]
        heapq.heappush(self._ready, entry)
        self._live += 1
        if self._strata is not None:
            klass = self._anchor(clip.labels)
            if klass is not None:
                heapq.heappush(self._by_class[klass], entry)
                entry[4] = 2

    def _anchor(self, labels: Sequence[int]) -> int | None:
        """The class at whose turn this copy is drawn: one of its labels, ∝ ``anchor_weights``."""
        candidates = [label for label in labels if label in self._by_class]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        weights = self._anchor_weights
        pick = float(self._rng.random()) * sum(weights[label] for label in candidates)
        for label in candidates[:-1]:
            pick -= weights[label]
            if pick < 0:
                return label
        return candidates[-1]

    def _admit(self, clip: RawClip, dues: Sequence[float], position: float) -> None:
        if self._strata is not None and position > self._head:
            self._head = position
        for due in dues:
            if due <= position:
                self._make_ready(due, clip)
            else:
                heapq.heappush(self._pending, (due, next(self._tiebreak), clip))
        while self._pending and self._pending[0][0] <= position:
            due, _, clip = heapq.heappop(self._pending)
            self._make_ready(due, clip)
