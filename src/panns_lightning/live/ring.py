"""A fixed-size ring of the most recent samples: the sliding window over an endless stream."""

from __future__ import annotations

import numpy as np


class SampleRing:
    """Keeps the last ``capacity`` float32 samples; memory stays ``capacity`` however long the stream."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, dtype=np.float32)
        self._write = 0  # where the next sample goes
        self.total = 0
        """Samples ever written."""

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    def extend(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32)
        self.total += samples.shape[0]
        if samples.shape[0] >= self.capacity:
            self._data[:] = samples[-self.capacity :]
            self._write = 0
            return
        first = min(samples.shape[0], self.capacity - self._write)
        self._data[self._write : self._write + first] = samples[:first]
        rest = samples.shape[0] - first
        self._data[:rest] = samples[first:]
        self._write = (self._write + samples.shape[0]) % self.capacity

    def latest(self, count: int) -> np.ndarray:
        """A copy of the last ``min(count, len(self))`` samples, oldest first."""
        count = min(int(count), len(self))
        start = (self._write - count) % self.capacity
        if start + count <= self.capacity:
            return self._data[start : start + count].copy()
        return np.concatenate([self._data[start:], self._data[: self._write]])
