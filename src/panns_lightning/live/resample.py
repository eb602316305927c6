"""Resample a signal that arrives in chunks, with the same result as resampling it whole.

:func:`panns_lightning.audio.resample` (torchaudio's windowed-sinc filter) applied to each chunk
alone would zero-pad every chunk edge and click at each boundary. Here every call resamples whole
groups of ``source/gcd`` input samples (the filter's period) with enough real signal on both
sides for the filter, and keeps that much back for the next call; only the very start and the
end of the stream see zero padding, exactly as one call over the whole signal does. The price is
a look-ahead of :attr:`StreamResampler.context` input samples (a few ms).

A pair whose torchaudio kernel would be too large (a coprime rate such as 44 101 → 32 000 Hz:
5.6 GB, a 44 101-sample period) goes through :class:`panns_lightning.polyphase.PolyphaseStream`
instead, as :func:`panns_lightning.audio.resample` does for a whole signal: a few MB, and any
output is final as soon as the ``width`` inputs after it have arrived.
"""

from __future__ import annotations

import math

import numpy as np

from panns_lightning.audio import resample_by_ratio, resample_ratio, uses_torchaudio
from panns_lightning.polyphase import PolyphaseStream, sinc_width


class StreamResampler:
    """``push(chunk)`` returns the output samples that are final; ``finish()`` returns the rest."""

    def __init__(self, source_rate: int, target_rate: int) -> None:
        self.source_rate, self.target_rate = int(source_rate), int(target_rate)
        # SampleRateError (a ValueError) for a rate outside input_limits' range
        self._up, self._down = resample_ratio(self.source_rate, self.target_rate)
        self._polyphase = None if uses_torchaudio(self._up, self._down) else PolyphaseStream(self._up, self._down)
        reach = sinc_width(self._up, self._down)
        self.context = self._down * (math.ceil(reach / self._down) + 1)
        """Input samples kept on each side of a resampled block (a multiple of the filter period)."""
        self._buffer = np.zeros(self.context, dtype=np.float32)  # left context: zeros before the start
        self._received = 0
        self._emitted = 0

    @property
    def identity(self) -> bool:
        return self.source_rate == self.target_rate

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Append ``chunk`` (float32 mono at the source rate); return the new target-rate samples."""
        chunk = np.asarray(chunk, dtype=np.float32)
        self._received += chunk.shape[0]
        if self.identity:
            self._emitted += chunk.shape[0]
            return chunk
        if self._polyphase is not None:
            return self._polyphase.push(chunk)
        self._buffer = np.concatenate([self._buffer, chunk])
        ready = (self._buffer.shape[0] - 2 * self.context) // self._down * self._down
        if ready <= 0:
            return np.zeros(0, dtype=np.float32)
        out = self._resample_block(self._buffer[: ready + 2 * self.context], ready * self._up // self._down)
        self._buffer = self._buffer[ready:]
        return out

    def finish(self) -> np.ndarray:
        """The remaining output, ``ceil(received * target / source)`` samples in all (as one call gives)."""
        total = -(-self._received * self._up // self._down)
        if self._polyphase is not None:
            return self._polyphase.finish()
        if self.identity or total <= self._emitted:
            return np.zeros(0, dtype=np.float32)
        pending = self._buffer.shape[0] - self.context
        groups = -(-max(pending, 1) // self._down)
        block = np.zeros(self.context + groups * self._down + self.context, dtype=np.float32)
        block[: self._buffer.shape[0]] = self._buffer
        out = self._resample_block(block, total - self._emitted)
        self._buffer = self._buffer[-self.context :]
        return out

    def _resample_block(self, block: np.ndarray, count: int) -> np.ndarray:
        start = self.context * self._up // self._down
        out = resample_by_ratio(block, self._up, self._down)[start : start + count]
        self._emitted += out.shape[0]
        return np.ascontiguousarray(out, dtype=np.float32)
