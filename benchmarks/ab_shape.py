"""AudioSet's shape in miniature, for ``ab_balance.py --shape audioset``: 527 classes, a long tail, ~2 labels a clip.

Class sizes follow AudioSet's full train set (``class_counts_full_train.csv``, whose counts span
61 to 937 780 clips, 15 000x) compressed by a power so that the largest class is 233x the
smallest, scaled so the smallest has ``MIN_CLIPS`` clips (9: ~21 k clips, ~42 k labels). Each
clip holds 1-3 labels (mean ~2) drawn from a shuffled list of the label tokens, so head classes
co-occur with everything, as Speech and Music do. The eval split is balanced: every class is the
first label of ``EVAL_PER_CLASS`` clips.

Sounds: class c is a (timbre, pitch) pair, 22 timbres × 24 log-spaced pitches between 150 Hz and
3.3 kHz, each event 0.3-0.9 s at a random time over faint pink noise; 8 kHz, 1 s clips, so that a
tiny CNN learns hundreds of classes in minutes on a CPU. Written in AudioSet's layout (segment
CSVs, ``Y<ytid>.wav``, ``class_labels_indices.csv`` with AudioSet's mids and names) and converted
by ``panns-prepare audioset``, the real converter.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 8000
CLIP_SECONDS = 1.0
MIN_CLIPS = 9
MAX_OVER_MIN = 233.0
EVAL_PER_CLASS = 4
NUM_TIMBRES, NUM_PITCHES = 22, 24
LABELS_PER_CLIP = (1, 2, 3)
LABELS_PER_CLIP_P = (0.35, 0.35, 0.30)
COUNTS_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "audioset" / "class_counts_full_train.csv"
_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def audioset_classes(counts_csv: Path) -> tuple[list[tuple[str, str]], np.ndarray]:
    """(mid, name) per class and the full-train clip count per class, in AudioSet's index order."""
    with open(counts_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [(r["mid"], r["display_name"]) for r in rows], np.array([int(r["clips_in_full_train"]) for r in rows])


def scaled_counts(full: np.ndarray, min_clips: int = MIN_CLIPS, ratio: float = MAX_OVER_MIN) -> np.ndarray:
    """AudioSet's counts compressed by a power to max/min = ``ratio``, the smallest class ``min_clips``."""
    exponent = np.log(ratio) / np.log(full.max() / full.min())
    return np.maximum(min_clips, np.round(min_clips * (full / full.min()) ** exponent)).astype(np.int64)


def train_label_lists(counts: np.ndarray, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Clips of 1-3 labels from a shuffled list of label tokens (a clip's duplicates merged)."""
    tokens = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    clips, start = [], 0
    while start < len(tokens):
        size = int(rng.choice(LABELS_PER_CLIP, p=LABELS_PER_CLIP_P))
        clips.append(tuple(sorted(set(tokens[start : start + size].tolist()))))
        start += size
    return clips


def eval_label_lists(num_classes: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Every class first label of ``EVAL_PER_CLASS`` clips; 0-2 other labels uniformly."""
    anchors = rng.permutation(np.repeat(np.arange(num_classes), EVAL_PER_CLASS))
    clips = []
    for anchor in anchors.tolist():
        extra = rng.choice(num_classes, size=int(rng.choice(LABELS_PER_CLIP, p=LABELS_PER_CLIP_P)) - 1)
        clips.append(tuple(sorted({anchor, *extra.tolist()})))
    return clips


def render(labels: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One clip: each label's event (its timbre at its pitch) over faint pink noise, peak 0.9."""
    n = int(SAMPLE_RATE * CLIP_SECONDS)
    t = np.arange(n) / SAMPLE_RATE
    noise = np.cumsum(rng.standard_normal(n)) * 0.002
    out = noise - np.linspace(noise[0], noise[-1], n)
    for label in labels:
        out += event(label, t, rng)
    return (0.9 * out / max(np.abs(out).max(), 1e-6)).astype(np.float32)


def event(label: int, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class ``label``'s sound on the time axis ``t``: one of 22 timbres at one of 24 pitches."""
    timbre, pitch = divmod(label, NUM_PITCHES)
    f = 150.0 * (3300.0 / 150.0) ** (pitch / (NUM_PITCHES - 1))
    length = rng.uniform(0.3, 0.9)
    onset = rng.uniform(0, CLIP_SECONDS - length)
    local = t - onset
    envelope = ((local >= 0) & (local < length)).astype(float) * np.sin(np.pi * np.clip(local / length, 0, 1))
    phase = rng.uniform(0, 2 * np.pi)
    tone = np.sin(2 * np.pi * f * t + phase)
    kind = timbre % 11
    if kind == 0:
        x = tone
    elif kind == 1:
        x = tone * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    elif kind == 2:
        x = tone * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 12 * t)))
    elif kind == 3:
        x = tone + 0.7 * np.sin(4 * np.pi * f * t + phase)
    elif kind == 4:
        x = sum(np.sin(2 * np.pi * f * k / 2 * t + phase * k) / k for k in range(1, 6))
    elif kind == 5:
        x = np.sin(2 * np.pi * f * (t + 0.6 * np.clip(local, 0, None) ** 2 / (2 * length)) + phase)
    elif kind == 6:
        x = np.sin(2 * np.pi * f * (t - 0.4 * np.clip(local, 0, None) ** 2 / (2 * length)) + phase)
    elif kind == 7:
        x = np.sin(2 * np.pi * f * t + 3 * np.sin(2 * np.pi * 6 * t) + phase)
    elif kind == 8:
        x = _band_noise(f / 1.15, f * 1.15, len(t), rng)
    elif kind == 9:
        x = _band_noise(f / 1.6, f * 1.6, len(t), rng)
    else:
        clicks = (np.sin(2 * np.pi * 8 * t) > 0.95).astype(float)
        x = tone * clicks
    if timbre >= 11:  # the second half of the timbres: the same sounds with a sharp attack and decay
        envelope = ((local >= 0) & (local < length)).astype(float) * np.exp(-np.clip(local, 0, None) * 8 / length)
    return x * envelope * rng.uniform(0.5, 1.0)


def _band_noise(low: float, high: float, n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum[(freqs < low) | (freqs > high)] = 0
    x = np.fft.irfft(spectrum, n)
    return x / max(np.abs(x).max(), 1e-9)


def build(work: Path, *, seed: int = 0, workers: int = 1, clips_per_shard: int = 256) -> dict[str, Path]:
    """The layout under ``work/raw`` and its shard sets ``work/shards/{train,eval}`` (once; reused after)."""
    from panns_lightning.cli.prepare import main as prepare
    from panns_lightning.labels import LabelSet, write_label_csv

    raw, shards = work / "raw", work / "shards"
    dirs = {"train": shards / "train", "eval": shards / "eval"}
    if all((directory / "manifest.json").is_file() for directory in dirs.values()):
        return dirs
    started = time.perf_counter()
    classes, full = audioset_classes(COUNTS_CSV)
    rng = np.random.default_rng([seed, 527])
    splits = {
        "balanced_train": train_label_lists(scaled_counts(full), rng),
        "eval": eval_label_lists(len(classes), rng),
    }
    raw.mkdir(parents=True, exist_ok=True)
    write_label_csv(LabelSet.from_pairs(classes), raw / "class_labels_indices.csv")
    used: set[str] = set()
    for split, label_lists in splits.items():
        folder = raw / "audio" / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["# synthetic AudioSet shape", "# n", "# YTID, start_seconds, end_seconds, positive_labels"]
        for number, labels in enumerate(label_lists):
            ytid = "".join(rng.choice(_ALPHABET, size=11))
            while ytid in used:
                ytid = "".join(rng.choice(_ALPHABET, size=11))
            used.add(ytid)
            clip_rng = np.random.default_rng([seed, number, len(split)])
            sf.write(folder / f"Y{ytid}.wav", render(labels, clip_rng), SAMPLE_RATE, subtype="PCM_16")
            mids = ",".join(classes[c][0] for c in labels)
            lines.append(f'{ytid}, 0.000, {CLIP_SECONDS:.3f}, "{mids}"')
        (raw / f"{split}_segments.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"rendered {sum(map(len, splits.values()))} clips in {time.perf_counter() - started:.0f} s", flush=True)
    for split, csv_name in (("train", "balanced_train_segments.csv"), ("eval", "eval_segments.csv")):
        code = prepare(
            ["audioset", "--segments", str(raw / csv_name), "--audio-dir", str(raw / "audio"),
             "--labels", str(raw / "class_labels_indices.csv"), "--out", str(dirs[split]),
             "--sample-rate", str(SAMPLE_RATE), "--clip-seconds", str(CLIP_SECONDS),
             "--clips-per-shard", str(clips_per_shard), "--workers", str(workers), "--overwrite", "--quiet"]
        )  # fmt: skip
        if code:
            raise SystemExit(f"panns-prepare audioset ({split}) failed ({code})")
    print(f"AudioSet-shape data built in {time.perf_counter() - started:.0f} s under {work}", flush=True)
    return dirs
