"""Decode and resample files in worker processes, running a bounded distance ahead of the model.

:class:`Prefetcher` hands clips back in input order. At most ``ahead`` files are in flight or
waiting, so memory stays bounded however long the list is; a file that cannot be decoded comes
back with its reason instead of a waveform, and costs only itself. Workers are started (and the
first files submitted) before the model is loaded, so decoding overlaps the model's loading.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DecodedClip:
    """One input file: its mono float32 waveform at the model's rate, or why there is none."""

    index: int
    path: Path
    waveform: np.ndarray | None
    error: str | None = None


def default_workers(device: str) -> int:
    """Decode processes: one on a 2-core host (the model takes the cores), up to 4 beside a GPU."""
    cores = os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(1, min(4, cores - 1))
    return max(1, min(2, cores // 2))


def decode(index: int, path: Path, sample_rate: int) -> DecodedClip:
    """Decode ``path`` to mono float32 at ``sample_rate``; a failure is returned, not raised."""
    from panns_lightning.audio import AudioDecodeError, load_audio

    try:
        return DecodedClip(index, path, load_audio(path, sample_rate))
    except AudioDecodeError as error:
        return DecodedClip(index, path, None, error.reason)
    except (OSError, ValueError, RuntimeError, MemoryError) as error:
        return DecodedClip(index, path, None, " ".join((str(error) or type(error).__name__).split()))


class Prefetcher:
    """Decoded clips of ``paths`` in order, ``workers`` processes (0: in this process), ``ahead`` in flight."""

    def __init__(self, paths: Sequence[Path], sample_rate: int, *, workers: int, ahead: int) -> None:
        if workers < 0 or ahead < 1:
            raise ValueError(f"need workers >= 0 and ahead >= 1, got workers={workers}, ahead={ahead}")
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.ahead = ahead
        self.workers = min(workers, len(self.paths))
        self._next = 0
        self._pending: deque[tuple[int, Future[DecodedClip]]] = deque()
        self._pool: ProcessPoolExecutor | None = None
        if self.workers:
            self._pool = self._new_pool()
            self._fill()

    def __iter__(self) -> Iterator[DecodedClip]:
        try:
            if self._pool is None:
                for index, path in enumerate(self.paths):
                    yield decode(index, path, self.sample_rate)
                return
            while self._pending:
                index, future = self._pending.popleft()
                try:
                    clip = future.result()
                except BrokenProcessPool:
                    # A decoder process died (killed for memory, or a crash in a native decoder):
                    # this file is reported, a new pool takes the files still waiting.
                    clip = DecodedClip(index, self.paths[index], None, "the decoding process died while reading it")
                    self._restart()
                self._fill()
                yield clip
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            for _, future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=_context(), initializer=_quiet_worker)

    def _restart(self) -> None:
        assert self._pool is not None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        waiting = [index for index, _ in self._pending]
        self._pending = deque((index, self._submit(index)) for index in waiting)

    def _submit(self, index: int) -> Future[DecodedClip]:
        assert self._pool is not None
        return self._pool.submit(decode, index, self.paths[index], self.sample_rate)

    def _fill(self) -> None:
        while len(self._pending) < self.ahead and self._next < len(self.paths):
            self._pending.append((self._next, self._submit(self._next)))
            self._next += 1


def _context() -> multiprocessing.context.BaseContext:
    """fork on Linux (workers start in milliseconds, as DataLoader's do); spawn elsewhere."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _quiet_worker() -> None:
    """One thread per worker: the cores belong to the model."""
    import torch

    torch.set_num_threads(1)
