"""Bounds on sizes that audio from someone else chooses: sample rates, before anything is allocated.

A WAV header, a file's rate, an HDF5 attribute or ``--stdin-rate`` is a number the input picks;
every buffer that follows (the clip's frames, the resampling filter, the stream's ring) scales
with it. Every reader checks a rate against one range before it allocates: decoding files
(:mod:`panns_lightning.audio`), the live stream (:mod:`panns_lightning.live.pcm`), HDF5 rows
(:mod:`panns_lightning.datasets.hdf5_rows`) and the converters' ``--sample-rate``.

The range is 1 kHz .. 384 kHz: telephone audio (8 kHz) up to the fastest common audio
interfaces and ultrasonic recorders (384 kHz). A 10 s clip at 384 kHz is 15 MB of float32; at
the ``1099511627776`` Hz a hostile header may claim it would be 44 TB. Recordings above 384 kHz
(some bat detectors) are accepted when ``PANNS_MAX_SAMPLE_RATE`` raises the ceiling (up to
:data:`HARD_MAX_SAMPLE_RATE`). Plain Python: importing this module costs nothing.
"""

from __future__ import annotations

import numbers
import os

PANNS_SAMPLE_RATE = 32_000
"""Hz. The one home of the PANNs rate: the paper's models, upstream's HDF5 packing and raw-PCM example,
and the default of every converter and model config (a test finds any other literal 32000 in src/)."""
MIN_SAMPLE_RATE = 1000
"""Hz. Below this no audio tagger has anything to hear (a 1 kHz rate keeps 0-500 Hz)."""
DEFAULT_MAX_SAMPLE_RATE = 384_000
"""Hz. The ceiling unless ``PANNS_MAX_SAMPLE_RATE`` says otherwise."""
HARD_MAX_SAMPLE_RATE = 2_000_000
"""Hz. ``PANNS_MAX_SAMPLE_RATE`` may not go above this: a 10 s clip is then 80 MB of float32, and the
polyphase filter of a coprime rate (about 12 x source/gcd floats) up to 100 MB."""
MAX_RATE_ENV = "PANNS_MAX_SAMPLE_RATE"


class SampleRateError(ValueError):
    """A sample rate outside :func:`sample_rate_range`."""


def sample_rate_range() -> tuple[int, int]:
    """``(lowest, highest)`` accepted rate in Hz: 1 kHz and ``PANNS_MAX_SAMPLE_RATE`` (default 384 kHz)."""
    text = os.environ.get(MAX_RATE_ENV, "").strip()
    if not text:
        return MIN_SAMPLE_RATE, DEFAULT_MAX_SAMPLE_RATE
    try:
        ceiling = int(text)
    except ValueError:
        raise SampleRateError(f"{MAX_RATE_ENV}={text!r} is not a whole number of Hz") from None
    if not DEFAULT_MAX_SAMPLE_RATE <= ceiling <= HARD_MAX_SAMPLE_RATE:
        raise SampleRateError(
            f"{MAX_RATE_ENV}={ceiling} must lie in {DEFAULT_MAX_SAMPLE_RATE}..{HARD_MAX_SAMPLE_RATE} Hz"
        )
    return MIN_SAMPLE_RATE, ceiling


def check_sample_rate(rate: object, what: str) -> int:
    """``rate`` as an int if it is a whole number of Hz within :func:`sample_rate_range`, else :class:`SampleRateError`.

    ``what`` names the number in the message (``"stdin: the WAV header's sample rate"``).
    """
    lowest, highest = sample_rate_range()
    try:
        value = int(rate)  # type: ignore[call-overload]
        whole = value == rate
    except (TypeError, ValueError, OverflowError):
        value, whole = 0, False
    if not whole:
        raise SampleRateError(f"{what} is {rate!r}, not a whole number of Hz")
    if not lowest <= value <= highest:
        hint = f"; set {MAX_RATE_ENV} to accept more" if value > highest and highest < HARD_MAX_SAMPLE_RATE else ""
        shown = value if isinstance(rate, numbers.Integral) else f"{rate:g}"
        raise SampleRateError(f"{what} is {shown} Hz, outside the supported {lowest}..{highest} Hz{hint}")
    return value
