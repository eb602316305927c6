"""Batches of windows drawn from many files, results handed back per file in input order.

``panns-tag`` used to run one file at a time, so a folder of 10 s clips ran the network at batch 1.
Here each decoded file is cut into windows (:func:`panns_lightning.inference.plan_windows`, the
same windows :meth:`AudioTagger.infer` uses), windows of equal length from consecutive files are
stacked up to ``batch_size``, and a file's output is assembled (:meth:`AudioTagger.combine`) once
all its windows have run. Only windows of one length share a batch (a 10 s window never runs
padded beside a 3 s tail), so a file's numbers do not depend on its neighbours beyond float
rounding. Files wait for their windows at most ``max_pending`` files deep; past that every
partly filled batch runs, which bounds memory and the delay before a result is printed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from panns_lightning.inference import InferenceOutput, plan_windows

from .prefetch import DecodedClip


@dataclass
class FileResult:
    """One input file's output (``None`` with ``error`` set when it could not be tagged)."""

    index: int
    path: Path
    output: InferenceOutput | None
    waveform: np.ndarray | None = None
    error: str | None = None


@dataclass
class _Pending:
    clip: DecodedClip
    windows: list[tuple[int, int]] = field(default_factory=list)
    outputs: list[dict[str, np.ndarray] | None] = field(default_factory=list)
    remaining: int = 0
    error: str | None = None


class WindowBatcher:
    """Run ``tagger`` over decoded clips with windows of many files per forward pass."""

    def __init__(self, tagger: Any, batch_size: int, max_pending: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tagger = tagger
        self.batch_size = batch_size
        self.max_pending = max_pending or 2 * batch_size
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._buckets: dict[int, list[tuple[int, int]]] = {}

    def run(self, clips: Iterable[DecodedClip]) -> Iterator[FileResult]:
        """Each clip's :class:`FileResult`, in the order the clips come."""
        for clip in clips:
            self._add(clip)
            yield from self._ready()
            if len(self._pending) > self.max_pending:
                self._flush_all()
                yield from self._ready()
        self._flush_all()
        yield from self._ready()

    # ---- windows in, batches out ----------------------------------------------------------------
    def _add(self, clip: DecodedClip) -> None:
        state = _Pending(clip, error=clip.error)
        self._pending[clip.index] = state
        if clip.waveform is None:
            return
        state.windows = plan_windows(clip.waveform.shape[0], self.tagger.window_samples)
        state.outputs = [None] * len(state.windows)
        state.remaining = len(state.windows)
        for position, (start, stop) in enumerate(state.windows):
            length = max(stop - start, self.tagger.min_samples)
            bucket = self._buckets.setdefault(length, [])
            bucket.append((clip.index, position))
            if len(bucket) == self.batch_size:
                self._run(length)

    def _flush_all(self) -> None:
        for length in list(self._buckets):
            self._run(length)

    def _run(self, length: int) -> None:
        members = self._buckets.pop(length, [])
        if not members:
            return
        batch = np.zeros((len(members), length), dtype=np.float32)
        for row, (index, position) in enumerate(members):
            state = self._pending[index]
            start, stop = state.windows[position]
            batch[row, : stop - start] = state.clip.waveform[start:stop]
        try:
            outputs = self.tagger.run_batch(batch)
        except (ValueError, RuntimeError) as error:
            if len(members) == 1:
                self._fail(members[0][0], error)
                return
            # Find out whose window it was: each alone, so one bad window costs only its file.
            for row, member in enumerate(members):
                try:
                    self._store(member, self.tagger.run_batch(batch[row : row + 1]), 0)
                except (ValueError, RuntimeError) as single:
                    self._fail(member[0], single)
            return
        for row, member in enumerate(members):
            self._store(member, outputs, row)

    def _store(self, member: tuple[int, int], outputs: dict[str, np.ndarray], row: int) -> None:
        index, position = member
        state = self._pending[index]
        state.outputs[position] = {key: value[row] for key, value in outputs.items()}
        state.remaining -= 1

    def _fail(self, index: int, error: BaseException) -> None:
        state = self._pending[index]
        state.error = state.error or " ".join((str(error) or type(error).__name__).split())
        state.remaining -= 1

    # ---- results out, in order ------------------------------------------------------------------
    def _ready(self) -> Iterator[FileResult]:
        while self._pending:
            index, state = next(iter(self._pending.items()))
            if state.remaining > 0:
                return
            del self._pending[index]
            clip = state.clip
            if state.error is not None:
                yield FileResult(index, clip.path, None, None, state.error)
                continue
            assert clip.waveform is not None
            per_window = [outputs for outputs in state.outputs if outputs is not None]
            output = self.tagger.combine(state.windows, per_window, clip.waveform.shape[0])
            yield FileResult(index, clip.path, output, clip.waveform)
