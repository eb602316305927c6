"""Resample a signal that arrives in chunks, with the same result as resampling it whole.

:func:`panns_lightning.audio.resample` (torchaudio's windowed-sinc filter) applied to each chunk
alone would zero-pad every chunk edge and click at each boundary. Here every call resamples whole
groups of ``source/gcd`` input samples (the filter's period) with enough real signal on both
sides for the filter, and keeps that much back for the next call; only the very start and the
end of the stream see zero padding, exactly as one call over the whole signal does. The price is
a look-ahead of :attr:`StreamResampler.context` input samples (a few ms).
"""

from __future__ import annotations

import math

import numpy as np

from panns_lightning.audio import resample

# torchaudio's defaults for its sinc kernel; the kernel reaches ceil(width * orig / (min * rolloff))
# input samples either side of each output (see torchaudio.functional.resample).
_LOWPASS_FILTER_WIDTH = 6
_ROLLOFF = 0.99


class StreamResampler:
    """``push(chunk)`` returns the output samples that are final; ``finish()`` returns the rest."""

    def __init__(self, source_rate: int, target_rate: int) -> None:
        if source_rate < 1 or target_rate < 1:
            raise ValueError(f"sample rates must be positive, got {source_rate} -> {target_rate}")
        self.source_rate, self.target_rate = int(source_rate), int(target_rate)
        divisor = math.gcd(self.source_rate, self.target_rate)
        self._up, self._down = self.target_rate // divisor, self.source_rate // divisor
        reach = math.ceil(_LOWPASS_FILTER_WIDTH * self._down / (min(self._up, self._down) * _ROLLOFF))
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
        out = resample(block, self.source_rate, self.target_rate)[start : start + count]
        self._emitted += out.shape[0]
        return np.ascontiguousarray(out, dtype=np.float32)
