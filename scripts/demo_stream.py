"""Write the live-tagging example of docs/guides/live-audio.md: 30 s of WAV with four ``make demo`` sound classes.

    python scripts/demo_stream.py demo_stream.wav
    cat demo_stream.wav | panns-tag --stream - --checkpoint outputs/demo/runs/<time>/checkpoints/best.ckpt \\
        --hop 0.5 --every 10

44.1 kHz, 16-bit mono (so the stream is resampled to the demo model's 16 kHz): a -40 dBFS noise
floor with, at -12 dBFS, a 500 Hz tone 3-5 s, a high noise burst 9-10 s, slow clicks 14-17 s and a
rising chirp 21-22 s (the synthetic generator's own renderers; the same file for every run).
"""

from __future__ import annotations

import argparse

import numpy as np
import soundfile as sf

from panns_lightning.datasets.synthetic import event_catalog

RATE = 44100
SECONDS = 30
EVENTS = (
    ("Tone, 500 Hz", 3.0, 5.0),
    ("Noise burst, high band (3.5-5.5 kHz)", 9.0, 10.0),
    ("Click train, slow (6/s)", 14.0, 17.0),
    ("Chirp, rising", 21.0, 22.0),
)


def demo_stream(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    catalog = {event.name: event for event in event_catalog()}
    signal = 10 ** (-40 / 20) * rng.standard_normal(SECONDS * RATE)
    for name, start, stop in EVENTS:
        first, last = int(start * RATE), int(stop * RATE)
        signal[first:last] += 10 ** (-12 / 20) * catalog[name].render(rng, RATE, last - first)
    return np.clip(signal, -1, 1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="WAV file to write")
    sf.write(parser.parse_args().out, demo_stream(), RATE, subtype="PCM_16")


if __name__ == "__main__":
    main()
