"""Polyphase sinc resampling: torchaudio's filter for any rate ratio, at a cost that does not grow with it.

``torchaudio.functional.resample`` reduces ``target/source`` to ``up/down`` and builds an
``up x (2 width + down)`` kernel, applied as a convolution with stride ``down``: every output
costs ``2 width + down`` multiply-adds and the kernel ``4 up (2 width + down)`` bytes. For
44.1 → 32 kHz (``320/441``) that is 147 k taps; for a coprime pair such as 44 101 → 32 000
(``32000/44101``) it is 1.4 G taps, 5.6 GB, and a stream 18x slower than real time.

The same output needs far less. Output ``j`` sits at input position ``j down / up``; with
``q, r = divmod(j down, up)`` it is ``sum_d x[q + d] h((d up - r) / (down up))`` over the
``2 width + 1`` taps ``d = -width .. width`` that the filter reaches. ``h`` depends only on the
phase ``r``, so a table of ``up x (2 width + 1)`` values (:class:`PolyphaseFilter`) serves every
output: 608 k values (2.4 MB) and 19 multiply-adds per output for 44 101 → 32 000. ``h`` is
torchaudio's own (``sinc_interp_hann``, ``lowpass_filter_width`` 6, ``rolloff`` 0.99, evaluated
in float64), so results match torchaudio's to float32 rounding (about 1e-6) at the exact ratio:
nothing is approximated. Outside the signal the input is zero, as in torchaudio, and a signal of
``n`` samples gives ``ceil(n up / down)`` outputs.

Plain NumPy. :mod:`panns_lightning.audio` uses this path only where torchaudio's kernel would
exceed ``MAX_RESAMPLE_KERNEL``, so every common rate pair keeps torchaudio's exact output.
"""

from __future__ import annotations

import functools
import math

import numpy as np

LOWPASS_FILTER_WIDTH = 6
"""torchaudio's default: the filter spans this many zero crossings of the lower rate's sinc on each side."""
ROLLOFF = 0.99
"""torchaudio's default: the cutoff as a fraction of the lower Nyquist frequency."""
_BLOCK_TAPS = 1 << 20  # outputs x taps gathered at a time: 4 MiB of float32 whatever the signal length


def sinc_width(up: int, down: int) -> int:
    """Input samples the filter reaches on either side of an output (torchaudio's ``width``)."""
    return math.ceil(LOWPASS_FILTER_WIDTH * down / (min(up, down) * ROLLOFF))


class PolyphaseFilter:
    """The ``up`` phases of torchaudio's sinc kernel for the reduced ratio ``up / down``, ``2 width + 1`` taps each."""

    def __init__(self, up: int, down: int) -> None:
        if up < 1 or down < 1 or math.gcd(up, down) != 1:
            raise ValueError(f"up/down must be positive and in lowest terms, got {up}/{down}")
        self.up, self.down = int(up), int(down)
        self.width = sinc_width(self.up, self.down)
        base = min(self.up, self.down) * ROLLOFF
        offsets = np.arange(-self.width, self.width + 1, dtype=np.float64)
        phases = np.arange(self.up, dtype=np.float64)[:, None]
        t = base * (offsets[None, :] * self.up - phases) / (self.down * self.up)
        t = np.clip(t, -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
        window = np.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
        self.taps = (np.sinc(t) * window * (base / self.down)).astype(np.float32)
        """``[up, 2 width + 1]``: row ``r`` weighs inputs ``q - width .. q + width`` of an output of phase ``r``."""

    def outputs(self, signal: np.ndarray, first_input: int, start: int, stop: int) -> np.ndarray:
        """Outputs ``start .. stop - 1``; ``signal[k]`` is input sample ``first_input + k``, zeros elsewhere.

        ``signal`` must cover every input these outputs reach, except where the signal has
        none (before sample 0, after its end): callers pad those with zeros.
        """
        result = np.empty(max(stop - start, 0), dtype=np.float32)
        block = max(1, _BLOCK_TAPS // self.taps.shape[1])
        offsets = np.arange(-self.width, self.width + 1, dtype=np.int64)
        for begin in range(start, stop, block):
            index = np.arange(begin, min(begin + block, stop), dtype=np.int64)
            centre, phase = np.divmod(index * self.down, self.up)
            gathered = signal[centre[:, None] + offsets[None, :] - first_input]
            result[begin - start : begin - start + index.shape[0]] = np.einsum(
                "ij,ij->i", gathered, self.taps[phase], dtype=np.float32
            )
        return result

    def reach(self, output: int) -> tuple[int, int]:
        """First and last input sample that output ``output`` weighs."""
        centre = output * self.down // self.up
        return centre - self.width, centre + self.width


@functools.lru_cache(maxsize=8)
def polyphase_filter(up: int, down: int) -> PolyphaseFilter:
    """A cached :class:`PolyphaseFilter` (building one costs more than applying it to a clip)."""
    return PolyphaseFilter(up, down)


def polyphase_resample(signal: np.ndarray, up: int, down: int) -> np.ndarray:
    """The whole 1-D ``signal`` resampled by ``up / down``: ``ceil(n up / down)`` float32 samples."""
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    kernel = polyphase_filter(up, down)
    count = -(-signal.shape[0] * up // down)
    if count == 0:
        return np.zeros(0, dtype=np.float32)
    last = kernel.reach(count - 1)[1]
    padded = np.zeros(kernel.width + max(last + 1, signal.shape[0]), dtype=np.float32)
    padded[kernel.width : kernel.width + signal.shape[0]] = signal
    return kernel.outputs(padded, -kernel.width, 0, count)


class PolyphaseStream:
    """:func:`polyphase_resample` of a signal that arrives in chunks, output as soon as it is final.

    Keeps only the inputs the next outputs reach (``2 width + 1`` plus the unconsumed chunk),
    so memory is flat however long the stream; the concatenated outputs equal one call over the
    whole signal.
    """

    def __init__(self, up: int, down: int) -> None:
        self.filter = polyphase_filter(up, down)
        self.up, self.down = up, down
        self._buffer = np.zeros(self.filter.width, dtype=np.float32)  # zeros before the start
        self._first = -self.filter.width  # input index of _buffer[0]
        self._received = 0
        self._emitted = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Append float32 input samples; return the outputs whose inputs have all arrived."""
        chunk = np.asarray(chunk, dtype=np.float32)
        self._received += chunk.shape[0]
        self._buffer = np.concatenate([self._buffer, chunk])
        # the last output j with j down // up + width <= received - 1
        ready = max(((self._received - self.filter.width) * self.up - 1) // self.down + 1, 0)
        return self._emit(ready)

    def finish(self) -> np.ndarray:
        """The remaining outputs (the stream's end padded with zeros): ``ceil(received up / down)`` in all."""
        total = -(-self._received * self.up // self.down)
        if total <= self._emitted:
            return np.zeros(0, dtype=np.float32)
        needed = self.filter.reach(total - 1)[1] + 1 - self._first
        if needed > self._buffer.shape[0]:
            self._buffer = np.concatenate([self._buffer, np.zeros(needed - self._buffer.shape[0], dtype=np.float32)])
        return self._emit(total)

    def _emit(self, stop: int) -> np.ndarray:
        if stop <= self._emitted:
            return np.zeros(0, dtype=np.float32)
        out = self.filter.outputs(self._buffer, self._first, self._emitted, stop)
        self._emitted = stop
        keep_from = self.filter.reach(stop)[0]  # the first input the next output weighs
        if keep_from > self._first:
            self._buffer = self._buffer[keep_from - self._first :]
            self._first = keep_from
        return out
