"""PANNs' BalancedTrainSampler, re-implemented as the yardstick for our streamed sampler.

The algorithm (Kong et al., PANNs, ``BalancedTrainSampler``): keep a shuffled queue of class ids;
for each draw pop a class, take the next clip index from that class's shuffled list (reshuffle the
list when it is used up), and refill the queue with a fresh permutation of the classes when it is
empty. Every class anchors exactly one draw in C; within a class no clip repeats before all of its
clips were drawn. It needs random access to every clip, which is what streaming gives up; we keep
it to measure ours against (``balance.py``) and for the HDF5 baseline in ``benchmarks/bench_data.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np


class ClipLabelsLike(Protocol):
    """Labels in CSR form: clip i's classes are ``values[offsets[i]:offsets[i + 1]]``."""

    offsets: np.ndarray
    values: np.ndarray
    num_classes: int


class PannsBalancedSampler:
    """Endless balanced draws of clip indices; iterate for indices or call :meth:`draw` / :meth:`batches`.

    ``label_lists[i]`` holds clip i's class indices. Classes without clips are left out of the queue
    (upstream would fail on them).
    """

    def __init__(self, label_lists: Sequence[Sequence[int]], num_classes: int, *, seed: int = 0) -> None:
        members: list[list[int]] = [[] for _ in range(num_classes)]
        for index, labels in enumerate(label_lists):
            for label in set(labels):
                if not 0 <= label < num_classes:
                    raise ValueError(f"clip {index}: label index {label} outside 0..{num_classes - 1}")
                members[label].append(index)
        self._rng = np.random.default_rng(seed)
        self._classes = np.array([c for c in range(num_classes) if members[c]], dtype=np.int64)
        if self._classes.size == 0:
            raise ValueError("PannsBalancedSampler needs at least one labelled clip")
        # Lists, not arrays: a Python list index is several times faster than numpy scalar indexing.
        self._members = [self._rng.permutation(members[c]).tolist() if members[c] else [] for c in range(num_classes)]
        self._pointers = [0] * num_classes
        self._queue: list[int] = []

    @classmethod
    def from_label_set(cls, label_set: ClipLabelsLike, *, seed: int = 0) -> "PannsBalancedSampler":
        """Build from CSR labels (``offsets``, ``values``, ``num_classes``), as ``balance.ClipLabels`` holds them."""
        sampler = cls.__new__(cls)
        order = np.argsort(label_set.values, kind="stable")
        clip_of_value = np.repeat(np.arange(len(label_set.offsets) - 1), np.diff(label_set.offsets))
        bounds = np.searchsorted(label_set.values[order], np.arange(label_set.num_classes + 1))
        sampler._rng = np.random.default_rng(seed)
        sampler._members = [
            sampler._rng.permutation(clip_of_value[order[bounds[c] : bounds[c + 1]]]).tolist()
            for c in range(label_set.num_classes)
        ]
        sampler._classes = np.array([c for c in range(label_set.num_classes) if sampler._members[c]], dtype=np.int64)
        if sampler._classes.size == 0:
            raise ValueError("PannsBalancedSampler needs at least one labelled clip")
        sampler._pointers = [0] * label_set.num_classes
        sampler._queue = []
        return sampler

    def __iter__(self) -> Iterator[int]:
        while True:
            yield self._next()

    def draw(self, count: int) -> np.ndarray:
        """The next ``count`` clip indices."""
        return np.fromiter((self._next() for _ in range(count)), dtype=np.int64, count=count)

    def batches(self, batch_size: int) -> Iterator[list[int]]:
        """Endless batches of ``batch_size`` indices (a ``batch_sampler`` for a map-style DataLoader)."""
        while True:
            yield [self._next() for _ in range(batch_size)]

    def _next(self) -> int:
        if not self._queue:
            # Reversed so that pop() from the end walks the permutation front to back.
            self._queue = self._rng.permutation(self._classes)[::-1].tolist()
        label = self._queue.pop()
        members = self._members[label]
        pointer = self._pointers[label]
        if pointer == len(members):
            self._rng.shuffle(members)
            pointer = 0
        self._pointers[label] = pointer + 1
        return members[pointer]
