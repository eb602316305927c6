"""Turn per-hop class probabilities into onset / offset events, once per event (hysteresis).

A sliding window reports a sound at every hop for as long as it lasts; a listener wants to hear
"dog bark started" once and "stopped" once. Each class is a two-state machine:

* **inactive → active** when its probability is ``>= onset`` for ``onset_hops`` hops in a row;
* **active → inactive** when it is ``< offset`` for ``offset_hops`` hops in a row.

``offset < onset`` leaves a band in which nothing changes, so a probability wobbling around one
threshold does not toggle the event. Times (seconds of stream) are estimates from window
geometry: a hop's window is ``[end - window, end]``.

* The **onset** is the end of the window analysed just before the run that crossed ``onset``:
  that window did not hold the sound (or not enough of it), the next one did, so it began after
  that end (within a hop of it for a sound the model hears at once).
* The **offset** is the start of the first window of the run below ``offset``: that window no
  longer holds the sound, the previous one did, so it ended before that start (within a hop of
  it; never earlier than the onset). Events still active when the stream ends close at its end.

For a sound the model recognises as soon as it enters the window, both are exact to the hop
grid: a tone from 3.0 s to 5.0 s, hop 0.5 s, is reported from 3.0 s to 5.0 s.

The tracker holds all classes at once (numpy over classes); one update costs microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Event:
    """One onset or offset of one class."""

    kind: str
    """``"onset"`` or ``"offset"``."""
    index: int
    """Class index."""
    time: float
    """Estimated stream time of the change (seconds; see the module docstring)."""
    decided: float
    """Stream time (end of the analysed audio) when the change was decided and reported."""
    probability: float
    """Onset: the probability at the decision. Offset: the event's peak probability."""
    onset: float | None = None
    """Offset only: the time of the matching onset."""

    @property
    def duration(self) -> float | None:
        return None if self.onset is None else self.time - self.onset


class EventTracker:
    """Hysteresis over ``num_classes`` probability tracks; feed one probability vector per hop."""

    def __init__(
        self,
        num_classes: int,
        *,
        onset: float = 0.5,
        offset: float = 0.3,
        onset_hops: int = 2,
        offset_hops: int = 2,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= offset <= onset <= 1.0:
            raise ValueError(f"need 0 <= offset <= onset <= 1, got onset={onset}, offset={offset}")
        if onset_hops < 1 or offset_hops < 1:
            raise ValueError(f"onset_hops and offset_hops must be >= 1, got {onset_hops}, {offset_hops}")
        self.num_classes = num_classes
        self.onset_threshold, self.offset_threshold = float(onset), float(offset)
        self.onset_hops, self.offset_hops = int(onset_hops), int(offset_hops)
        self.active = np.zeros(num_classes, dtype=bool)
        self._run = np.zeros(num_classes, dtype=np.int64)  # hops in a row towards the other state
        self._run_time = np.zeros(num_classes)  # the candidate change time of that run
        self._onset_time = np.zeros(num_classes)
        self._peak = np.zeros(num_classes)
        self._previous_time: float | None = None  # end of the window analysed before this one

    def update(self, time: float, probabilities: np.ndarray, window_start: float | None = None) -> list[Event]:
        """Feed the probabilities of the window ``[window_start, time]``; return the events it completes.

        Without ``window_start`` (probabilities not from a window) offsets are placed at ``time``.
        """
        p = np.asarray(probabilities, dtype=np.float64)
        if p.shape != (self.num_classes,):
            raise ValueError(f"expected {self.num_classes} probabilities, got shape {p.shape}")
        start = time if window_start is None else window_start
        before = start if self._previous_time is None else self._previous_time
        self._previous_time = time
        toward = np.where(self.active, p < self.offset_threshold, p >= self.onset_threshold)
        first = toward & (self._run == 0)
        self._run_time[first] = np.where(self.active[first], start, before)
        running = toward & (self._run > 0)  # an onset run's earlier hops count towards the peak
        self._peak = np.where(self.active | running, np.maximum(self._peak, p), p)
        self._run = np.where(toward, self._run + 1, 0)

        events: list[Event] = []
        needed = np.where(self.active, self.offset_hops, self.onset_hops)
        for index in np.flatnonzero(self._run >= needed):
            if self.active[index]:
                events.append(self._close(int(index), max(self._run_time[index], self._onset_time[index]), time))
            else:
                self._onset_time[index] = self._run_time[index]
                self.active[index] = True
                events.append(Event("onset", int(index), float(self._run_time[index]), time, float(p[index])))
            self._run[index] = 0
        return events

    def flush(self, time: float) -> list[Event]:
        """Close every active event at ``time`` (the end of the stream)."""
        events = [self._close(int(index), time, time) for index in np.flatnonzero(self.active)]
        self._run[:] = 0
        return events

    def _close(self, index: int, time: float, decided: float) -> Event:
        self.active[index] = False
        onset = float(self._onset_time[index])
        return Event("offset", index, float(time), decided, float(self._peak[index]), onset=onset)
