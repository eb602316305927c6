"""A small AudioSet look-alike, written in AudioSet's own on-disk layout.

The point is to exercise the real path end to end (segment CSV parser, file finder, decode,
downmix, resample, shards) and to give a demo a task a small CNN learns in minutes: every class
is a sound event that is plainly different on a log-mel at 16 kHz. Class frequencies in the
training CSV are long-tailed (Zipf-like) like AudioSet's; the eval CSV is roughly balanced so
every class has enough positives for a stable average precision.

Layout written under ``out_dir``::

    class_labels_indices.csv        index,mid,display_name
    balanced_train_segments.csv     3 '#' lines, then  YTID, start, end, "mid1,mid2"
    eval_segments.csv
    audio/balanced_train/...        Y{ytid}.wav | Y{ytid}.ogg | {ytid}_{start}_{end}.{wav,flac}
    audio/eval/...

Files mix 16/22.05/44.1 kHz, mono/stereo and wav/flac/ogg so the converter's resample,
downmix and finder paths all run. Everything is a pure function of ``seed``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from panns_lightning.labels import LabelSet, write_label_csv

DEFAULT_NUM_CLASSES = 12
DEFAULT_NUM_TRAIN = 2000
DEFAULT_NUM_EVAL = 300
DEFAULT_CLIP_SECONDS = 2.0
ZIPF_EXPONENT = 1.5  # head/rarest ≈ 12^1.5 ≈ 40 before co-occurrence flattens it (measured ≥ 20)
EVENTS_PER_CLIP_PROBABILITIES = (0.5, 0.35, 0.15)  # 1, 2 or 3 events
SNR_DB_RANGE = (3.0, 20.0)
BACKGROUND_DBFS_RANGE = (-42.0, -30.0)
EVENT_SECONDS_RANGE = (0.25, 1.0)
STORAGE_SAMPLE_RATES = ((16000, 0.5), (22050, 0.25), (44100, 0.25))
STEREO_PROBABILITY = 0.2
FORMAT_PROBABILITIES = (("wav", 0.7), ("flac", 0.2), ("ogg", 0.1))
SPLITS = {"balanced_train": 0, "eval": 1}
_YTID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


@dataclass(frozen=True)
class EventClass:
    """A synthetic sound class: its AudioSet-style mid, display name and generator."""

    mid: str
    name: str
    render: Callable[[np.random.Generator, int, int], np.ndarray]  # (rng, sample_rate, num_samples) → unit-RMS signal


@dataclass
class SyntheticDataset:
    """Where the generator wrote things, and the per-class positives of each split."""

    root: Path
    labels_csv: Path
    segments: dict[str, Path]
    audio_dir: Path
    class_counts: dict[str, list[int]] = field(default_factory=dict)
    num_files: int = 0


def generate_synthetic_audioset(
    out_dir: str | os.PathLike,
    *,
    num_classes: int = DEFAULT_NUM_CLASSES,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_eval: int = DEFAULT_NUM_EVAL,
    clip_seconds: float = DEFAULT_CLIP_SECONDS,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> SyntheticDataset:
    """Write the synthetic dataset into ``out_dir`` (refuses a non-empty directory unless ``overwrite``)."""
    catalog = event_catalog()
    if not 1 <= num_classes <= len(catalog):
        raise ValueError(f"num_classes must be in 1..{len(catalog)}, got {num_classes}")
    if num_train < 1 or num_eval < 1 or clip_seconds <= 0:
        raise ValueError(
            f"num_train, num_eval and clip_seconds must be positive, got {num_train}, {num_eval}, {clip_seconds}"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; pass --overwrite to write the synthetic dataset into it anyway")
    classes = catalog[:num_classes]
    labels = LabelSet.from_pairs((c.mid, c.name) for c in classes)
    audio_dir = out_dir / "audio"
    result = SyntheticDataset(out_dir, out_dir / "class_labels_indices.csv", {}, audio_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_label_csv(labels, result.labels_csv)

    plans = {
        "balanced_train": _plan_split(
            np.random.default_rng([seed, SPLITS["balanced_train"]]),
            num_train,
            num_classes,
            clip_seconds,
            balanced=False,
        ),
        "eval": _plan_split(
            np.random.default_rng([seed, SPLITS["eval"]]), num_eval, num_classes, clip_seconds, balanced=True
        ),
    }
    _make_ytids_unique(plans, np.random.default_rng([seed, 99]))
    total = sum(len(p) for p in plans.values())
    with tqdm(total=total, unit="clip", desc="synthetic", disable=not progress, dynamic_ncols=True) as bar:
        for split, clips in plans.items():
            split_dir = audio_dir / split
            split_dir.mkdir(parents=True, exist_ok=True)
            for number, clip in enumerate(clips):
                waveform = _render_clip(np.random.default_rng([seed, SPLITS[split], number, 7]), clip, classes)
                sf.write(split_dir / clip.filename, waveform, clip.sample_rate, format=clip.file_format.upper())
                bar.update(1)
            path = out_dir / f"{split}_segments.csv"
            _write_segments_csv(path, clips, labels)
            result.segments[split] = path
            counts = np.zeros(num_classes, dtype=int)
            for clip in clips:
                counts[list(clip.classes)] += 1
            result.class_counts[split] = counts.tolist()
    result.num_files = total
    return result


def event_catalog() -> list[EventClass]:
    """Classes in the order they are used: the first ``num_classes`` form the dataset (head first)."""
    return [
        EventClass("/synth/tone_500", "Tone, 500 Hz", _tone(500)),
        EventClass("/synth/chirp_up", "Chirp, rising", _chirp(400, 3200)),
        EventClass("/synth/noise_low", "Noise burst, low band (300-800 Hz)", _noise_band(300, 800)),
        EventClass("/synth/clicks_slow", "Click train, slow (6/s)", _clicks(6)),
        EventClass("/synth/harmonic_180", "Harmonic stack, 180 Hz", _harmonic(180, 10)),
        # A slow wide sweep: its shape, not only its position on the mel axis, sets it apart. PANNs
        # CNNs average over frequency at the end, so classes that differ by position alone
        # (two pure tones) take far longer to learn than a demo can afford.
        EventClass("/synth/siren", "Siren, sweeping 0.9-2.1 kHz", _vibrato(1500, 600, 2)),
        EventClass("/synth/am_1200", "Tremolo tone, 1.2 kHz", _am_tone(1200, 8)),
        EventClass("/synth/chirp_down", "Chirp, falling", _chirp(3200, 400)),
        EventClass("/synth/noise_high", "Noise burst, high band (3.5-5.5 kHz)", _noise_band(3500, 5500)),
        EventClass("/synth/clicks_fast", "Click train, fast (25/s)", _clicks(25)),
        EventClass("/synth/harmonic_600", "Harmonic stack, 600 Hz", _harmonic(600, 4)),
        EventClass("/synth/vibrato_1800", "Vibrato tone, 1.8 kHz", _vibrato(1800, 150, 5)),
        EventClass("/synth/tone_1000", "Tone, 1 kHz", _tone(1000)),
        EventClass("/synth/noise_mid", "Noise burst, mid band (1.2-2 kHz)", _noise_band(1200, 2000)),
        EventClass("/synth/chirp_up_wide", "Chirp, rising wide", _chirp(1000, 6000)),
        EventClass("/synth/clicks_buzz", "Click train, buzz (60/s)", _clicks(60)),
        EventClass("/synth/harmonic_90", "Harmonic stack, 90 Hz", _harmonic(90, 16)),
        EventClass("/synth/am_3500", "Tremolo tone, 3.5 kHz", _am_tone(3500, 3)),
        EventClass("/synth/vibrato_700", "Vibrato tone, 700 Hz", _vibrato(700, 60, 7)),
        EventClass("/synth/noise_top", "Noise burst, top band (6-7.5 kHz)", _noise_band(6000, 7500)),
        EventClass("/synth/tone_6500", "Tone, 6.5 kHz", _tone(6500)),
        EventClass("/synth/chirp_down_wide", "Chirp, falling wide", _chirp(6000, 1500)),
        EventClass("/synth/harmonic_350", "Harmonic stack, 350 Hz", _harmonic(350, 6)),
        EventClass("/synth/tone_250", "Tone, 250 Hz", _tone(250)),
        EventClass("/synth/tone_2500", "Tone, 2.5 kHz", _tone(2500)),
    ]


# ---------------------------------------------------------------------------------------------
# planning: which classes, rates, formats and names each clip gets


@dataclass(frozen=True)
class _ClipPlan:
    ytid: str
    start_seconds: int
    clip_seconds: float
    classes: tuple[int, ...]
    sample_rate: int
    channels: int
    file_format: str
    segment_name: bool  # a wav named {ytid}_{start}_{end}.wav (integer times) instead of Y{ytid}.wav

    @property
    def filename(self) -> str:
        """Both naming schemes the finder knows: flac in the CSV's spelling, some wav with integer times."""
        if self.file_format == "flac":
            return f"{self.ytid}_{self.start_text}_{self.end_text}.flac"
        if self.file_format == "wav" and self.segment_name:
            return f"{self.ytid}_{self.start_seconds}_{int(self.start_seconds + self.clip_seconds)}.wav"
        return f"Y{self.ytid}.{self.file_format}"

    @property
    def start_text(self) -> str:
        return f"{self.start_seconds:.3f}"

    @property
    def end_text(self) -> str:
        return f"{self.start_seconds + self.clip_seconds:.3f}"


def _plan_split(
    rng: np.random.Generator, num_clips: int, num_classes: int, clip_seconds: float, *, balanced: bool
) -> list[_ClipPlan]:
    zipf = 1.0 / np.arange(1, num_classes + 1) ** ZIPF_EXPONENT
    zipf /= zipf.sum()
    uniform = np.full(num_classes, 1.0 / num_classes)
    anchors = rng.permutation(np.arange(num_clips) % num_classes) if balanced else None
    rates, rate_p = zip(*STORAGE_SAMPLE_RATES)
    formats, format_p = zip(*FORMAT_PROBABILITIES)
    clips = []
    for number in range(num_clips):
        num_events = min(num_classes, 1 + int(rng.choice(3, p=EVENTS_PER_CLIP_PROBABILITIES)))
        if balanced:
            first = int(anchors[number])
        elif number < num_classes:
            first = number  # every class gets at least one training clip
        else:
            first = int(rng.choice(num_classes, p=zipf))
        weights = (uniform if balanced else zipf).copy()
        weights[first] = 0
        others = (
            rng.choice(num_classes, size=num_events - 1, replace=False, p=weights / weights.sum())
            if num_events > 1
            else []
        )
        ytid = "".join(rng.choice(_YTID_ALPHABET, size=11))
        start = int(rng.integers(0, 300))
        file_format = str(rng.choice(formats, p=format_p))
        clip = _ClipPlan(
            ytid=ytid,
            start_seconds=start,
            clip_seconds=clip_seconds,
            classes=tuple(sorted({first, *map(int, others)})),
            sample_rate=int(rng.choice(rates, p=rate_p)),
            channels=2 if rng.random() < STEREO_PROBABILITY else 1,
            file_format=file_format,
            segment_name=bool(rng.random() < 0.2),
        )
        clips.append(clip)
    return clips


def _make_ytids_unique(plans: dict[str, list[_ClipPlan]], rng: np.random.Generator) -> None:
    seen: set[str] = set()
    for clips in plans.values():
        for i, clip in enumerate(clips):
            ytid = clip.ytid
            while ytid in seen:
                ytid = "".join(rng.choice(_YTID_ALPHABET, size=11))
            seen.add(ytid)
            if ytid != clip.ytid:
                clips[i] = dataclasses.replace(clip, ytid=ytid)


def _write_segments_csv(path: Path, clips: Sequence[_ClipPlan], labels: LabelSet) -> None:
    num_positive = sum(len(c.classes) for c in clips)
    used = len({k for c in clips for k in c.classes})
    created = time.asctime(time.gmtime(0))  # fixed: output depends on seed only
    lines = [
        f"# Segments csv created {created}",
        f"# num_ytids={len(clips)}, num_segs={len(clips)}, num_unique_labels={used}, num_positive_labels={num_positive}",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    for clip in clips:
        mids = ",".join(labels.mids[k] for k in clip.classes)
        lines.append(f'{clip.ytid}, {clip.start_text}, {clip.end_text}, "{mids}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# rendering


def _render_clip(rng: np.random.Generator, clip: _ClipPlan, classes: Sequence[EventClass]) -> np.ndarray:
    sr = clip.sample_rate
    length = int(round(clip.clip_seconds * sr))
    background_rms = 10 ** (rng.uniform(*BACKGROUND_DBFS_RANGE) / 20)
    mix = _pinkish_noise(rng, length) * background_rms
    for k in clip.classes:
        event_length = min(length, int(rng.uniform(*EVENT_SECONDS_RANGE) * sr))
        onset = int(rng.integers(0, length - event_length + 1))
        event = classes[k].render(rng, sr, event_length) * _fade(event_length, sr)
        gain = background_rms * 10 ** (rng.uniform(*SNR_DB_RANGE) / 20)
        mix[onset : onset + event_length] += gain * event
    peak = np.abs(mix).max()
    if peak > 0.95:
        mix *= 0.95 / peak
    if clip.channels == 2:
        # Different gains per channel, so the converter's downmix is an average, not a copy.
        return np.stack([mix, mix * rng.uniform(0.5, 1.0)], axis=1).astype(np.float32)
    return mix.astype(np.float32)


def _fade(length: int, sr: int) -> np.ndarray:
    ramp = min(length // 2, int(0.01 * sr))
    envelope = np.ones(length)
    if ramp > 0:
        rise = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
        envelope[:ramp] = rise
        envelope[-ramp:] = rise[::-1]
    return envelope


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(x**2))
    return x / rms if rms > 0 else x


def _pinkish_noise(rng: np.random.Generator, length: int) -> np.ndarray:
    """Unit-RMS noise with a 1/f-like tilt: a more natural floor than white noise."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
    return _unit_rms(np.fft.irfft(spectrum, n=length))


def _tone(frequency: float) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    def render(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
        return _unit_rms(np.sin(2 * np.pi * frequency * np.arange(n) / sr + rng.uniform(0, 2 * np.pi)))

    return render


def _chirp(start_hz: float, end_hz: float) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    def render(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
        frequency = start_hz * (end_hz / start_hz) ** np.linspace(0, 1, n)  # exponential sweep over the event
        return _unit_rms(np.sin(2 * np.pi * np.cumsum(frequency) / sr))

    return render


def _noise_band(low_hz: float, high_hz: float) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    def render(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
        spectrum = np.fft.rfft(rng.standard_normal(n))
        frequencies = np.fft.rfftfreq(n, 1 / sr)
        spectrum[(frequencies < low_hz) | (frequencies > high_hz)] = 0
        return _unit_rms(np.fft.irfft(spectrum, n=n))

    return render


def _clicks(rate_hz: float) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    def render(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
        impulses = np.zeros(n)
        times = np.arange(rng.uniform(0, 1 / rate_hz), n / sr, 1 / rate_hz)
        impulses[np.minimum((times * sr).astype(int), n - 1)] = 1.0
        t = np.arange(int(0.004 * sr)) / sr
        click = np.exp(-t / 0.0008) * np.sin(2 * np.pi * 2000 * t)  # a short damped 2 kHz ping
        return _unit_rms(np.convolve(impulses, click)[:n])

    return render


def _harmonic(f0: float, num_harmonics: int) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    def render(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
        t = np.arange(n) / sr
        orders = np.arange(1, num_harmonics + 1)[:, None]
        orders = orders[orders[:, 0] * f0 < min(7500, sr / 2)]
        phases = rng.uniform(0, 2 * np.pi, size=(len(orders), 1))
        return _unit_rms((np.sin(2 * np.pi * f0 * orders * t + phases) / orders).sum(axis=0))

    return render


def _am_tone(carrier_hz: float, modulation_hz: float) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    def render(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
        t = np.arange(n) / sr
        envelope = 0.5 * (1 + np.sin(2 * np.pi * modulation_hz * t + rng.uniform(0, 2 * np.pi)))
        return _unit_rms(envelope * np.sin(2 * np.pi * carrier_hz * t))

    return render


def _vibrato(
    center_hz: float, depth_hz: float, rate_hz: float
) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    def render(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
        t = np.arange(n) / sr
        frequency = center_hz + depth_hz * np.sin(2 * np.pi * rate_hz * t)
        return _unit_rms(np.sin(2 * np.pi * np.cumsum(frequency) / sr))

    return render
