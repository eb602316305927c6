"""Tag an endless stream: a sliding window over the latest audio, analysed every hop.

:class:`StreamTagger` takes chunks of samples of any size at the input rate, resamples them to
the model's rate as they come (:class:`StreamResampler`, same result as resampling the whole
signal), keeps the last ``window`` seconds in a ring (:class:`SampleRing`) and, each time another
``hop`` seconds have arrived, runs the model on the window and feeds the clip probabilities to an
:class:`EventTracker`. Memory is one window whatever the stream's length.

Why windows of a few seconds: PANNs were trained on 10 s clips, but a 10 s window would report a
sound up to 10 s after it stopped; 2-4 s windows keep most of the accuracy and react in about a
hop. Hop ``k`` (from 1) analyses the window ending at ``k * hop`` seconds of stream; early windows
are shorter (the stream has not lasted a window yet), zero-padded on the left only up to the
shortest input the model accepts. At :meth:`StreamTagger.finish` a last, partial hop analyses the
window ending at the end of the stream, then events still active are closed there.
"""

from __future__ import annotations

import time as clock
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from panns_lightning.live import DEFAULT_HOP_SECONDS, DEFAULT_WINDOW_SECONDS, MAX_WINDOW_SECONDS
from panns_lightning.live.events import Event, EventTracker
from panns_lightning.live.resample import StreamResampler
from panns_lightning.live.ring import SampleRing

if TYPE_CHECKING:
    from panns_lightning.inference import AudioTagger

ModelFn = Callable[[np.ndarray], np.ndarray]
"""float32 ``[samples]`` at the model's rate → clip probabilities ``[classes]``."""


@dataclass(frozen=True)
class Hop:
    """One analysis: the window ``[start, time]`` (stream seconds), its probabilities and events."""

    index: int
    time: float
    start: float
    probabilities: np.ndarray
    events: list[Event] = field(default_factory=list)
    seconds: float = 0.0
    """Processing time of this hop's model call (wall clock)."""


class StreamTagger:
    """Chunks in, :class:`Hop` s out (see the module docstring).

    Args:
        model: the network as a function of one window (see :data:`ModelFn`);
            :meth:`from_tagger` builds it from an :class:`~panns_lightning.inference.AudioTagger`.
        sample_rate: the model's rate. ``input_rate``: the rate of the pushed chunks.
        min_samples: shortest window the model accepts (early windows are zero-padded to it).
        tracker: event detection; ``None`` reports probabilities only.
    """

    def __init__(
        self,
        model: ModelFn,
        *,
        sample_rate: int,
        input_rate: int,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        hop_seconds: float = DEFAULT_HOP_SECONDS,
        min_samples: int = 1,
        tracker: EventTracker | None = None,
    ) -> None:
        if not 0 < hop_seconds <= window_seconds <= MAX_WINDOW_SECONDS:
            raise ValueError(
                f"need 0 < hop <= window <= {MAX_WINDOW_SECONDS:g} s, got hop={hop_seconds} s, window={window_seconds} s"
            )
        self.model = model
        self.sample_rate = int(sample_rate)
        self.window_samples = int(round(window_seconds * self.sample_rate))
        self.hop_samples = int(round(hop_seconds * self.sample_rate))
        if self.hop_samples < 1:
            raise ValueError(f"hop of {hop_seconds} s is less than one sample at {self.sample_rate} Hz")
        if self.window_samples < min_samples:
            raise ValueError(
                f"a window of {window_seconds:g} s is shorter than this model's shortest input, "
                f"{min_samples / self.sample_rate:g} s"
            )
        self.min_samples = int(min_samples)
        self.tracker = tracker
        self.resampler = StreamResampler(input_rate, self.sample_rate)
        self.ring = SampleRing(self.window_samples)
        self.hops = 0
        self.busy_seconds = 0.0
        """Time spent resampling, running the model and tracking events (not waiting for input)."""
        self._since_hop = 0
        self._closed = False

    @classmethod
    def from_tagger(
        cls,
        tagger: AudioTagger,
        *,
        input_rate: int,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        hop_seconds: float = DEFAULT_HOP_SECONDS,
        tracker: EventTracker | None = None,
    ) -> StreamTagger:
        """Stream through a loaded :class:`~panns_lightning.inference.AudioTagger` (any model file it reads)."""

        def clip_probabilities(window: np.ndarray) -> np.ndarray:
            return tagger.window_probabilities(window[None])[0]

        return cls(
            clip_probabilities,
            sample_rate=tagger.sample_rate,
            input_rate=input_rate,
            window_seconds=window_seconds,
            hop_seconds=hop_seconds,
            min_samples=tagger.min_samples,
            tracker=tracker,
        )

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / self.sample_rate

    @property
    def time(self) -> float:
        """Stream time: seconds of audio received so far at the model's rate."""
        return self.ring.total / self.sample_rate

    def push(self, chunk: np.ndarray) -> list[Hop]:
        """Add float32 mono samples at the input rate; return the hops they complete (often none)."""
        if self._closed:
            raise RuntimeError("push() after finish()")
        started = clock.perf_counter()
        samples = self.resampler.push(chunk)
        hops = self._consume(samples)
        self.busy_seconds += clock.perf_counter() - started
        return hops

    def finish(self) -> tuple[list[Hop], list[Event]]:
        """End of stream: the last (partial) hop, then offsets of the events still active."""
        if self._closed:
            return [], []
        started = clock.perf_counter()
        hops = self._consume(self.resampler.finish())
        if self._since_hop > 0:
            hops.append(self._analyse())
        closing = [] if self.tracker is None else self.tracker.flush(self.time)
        self._closed = True
        self.busy_seconds += clock.perf_counter() - started
        return hops, closing

    def _consume(self, samples: np.ndarray) -> list[Hop]:
        hops: list[Hop] = []
        while samples.shape[0]:
            take = min(self.hop_samples - self._since_hop, samples.shape[0])
            self.ring.extend(samples[:take])
            self._since_hop += take
            samples = samples[take:]
            if self._since_hop == self.hop_samples:
                hops.append(self._analyse())
        return hops

    def _analyse(self) -> Hop:
        window = self.ring.latest(self.window_samples)
        if window.shape[0] < self.min_samples:
            window = np.concatenate([np.zeros(self.min_samples - window.shape[0], dtype=np.float32), window])
        started = clock.perf_counter()
        probabilities = np.asarray(self.model(window), dtype=np.float32)
        seconds = clock.perf_counter() - started
        end = self.time
        start = max(end - self.window_seconds, 0.0)
        events = [] if self.tracker is None else self.tracker.update(end, probabilities, window_start=start)
        self.hops += 1
        self._since_hop = 0
        return Hop(self.hops, end, start, probabilities, events, seconds)
