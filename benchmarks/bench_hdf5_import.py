"""Import speed of AudioSet HDF5 packings: ``panns-prepare audioset-hdf5`` and ``audioset-mp3-hdf5``, clips/s.

    python benchmarks/bench_hdf5_import.py [--clips 200] [--mp3-clips 50] [--workers 0 2]

1. Writes ``--clips`` synthetic 10 s clips in upstream PANNs' packed layout (int16 ``[N, 320000]``
   at 32 kHz, bool ``[N, 527]`` targets) and converts them with the real command into int16
   shards at 32 kHz (rows copied, nothing decoded) and, for comparison, 16 kHz sinc-resampled.
2. Writes ``--mp3-clips`` of them as PaSST's mp3 packing (mp3 bytes, ``np.packbits`` targets)
   and converts those (each mp3 decoded once).

Files are read just after being written, i.e. mostly from the page cache: the figures are CPU
cost per clip, not disk speed. One untimed run warms up; each figure is the faster of
``--repeats`` runs (a shared host's other load only ever slows a run down). ``--workers 0``
converts in this process, where torch's resampler uses all its threads; worker processes use one
each. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import soundfile as sf

from panns_lightning.cli import prepare

RATE, CLIP, CLASSES = 32000, 320000, 527


def write_labels(path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([i, f"/m/c{i}", f"class {i}"] for i in range(CLASSES))
    return path


def synthetic_clips(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int16 waveforms (a tone + noise each) and long-tailed multi-hot targets."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP, dtype=np.float32) / RATE
    waveforms = np.empty((count, CLIP), dtype=np.int16)
    targets = np.zeros((count, CLASSES), dtype=bool)
    weights = 1.0 / np.arange(1, CLASSES + 1)
    weights /= weights.sum()
    for i in range(count):
        x = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(CLIP).astype(np.float32)
        waveforms[i] = (np.clip(x, -1, 1) * 32767).astype(np.int16)
        targets[i, rng.choice(CLASSES, size=rng.integers(1, 4), p=weights)] = True
    return waveforms, targets


def write_packed(path: Path, waveforms: np.ndarray, targets: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("audio_name", data=np.array([f"Y{i:011d}.wav".encode() for i in range(len(waveforms))]))
        f.create_dataset("waveform", data=waveforms)
        f.create_dataset("target", data=targets)
        f.attrs.create("sample_rate", data=RATE, dtype=np.int32)


def write_mp3(path: Path, waveforms: np.ndarray, targets: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("audio_name", data=np.array([f"Y{i:011d}.mp3".encode() for i in range(len(waveforms))]))
        mp3 = f.create_dataset("mp3", shape=(len(waveforms),), dtype=h5py.vlen_dtype(np.dtype("uint8")))
        for i, waveform in enumerate(waveforms):
            buffer = io.BytesIO()
            sf.write(buffer, waveform, RATE, format="MP3")
            mp3[i] = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        f.create_dataset("target", data=np.packbits(targets, axis=-1))


def timed_import(command: str, source: Path, labels: Path, out: Path, *extra: object) -> float:
    """Seconds of one conversion (reading names and targets included); its output is silenced."""
    args = [command, "--hdf5", source, "--labels", labels, "--out", out, "--quiet", "--overwrite", *extra]
    start = time.perf_counter()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        code = prepare.main([str(a) for a in args])
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{command} failed with exit code {code}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200, help="clips in the packed file")
    parser.add_argument("--mp3-clips", type=int, default=50, help="clips in the mp3 file (0: skip)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        labels = write_labels(root / "class_labels_indices.csv")
        waveforms, targets = synthetic_clips(args.clips)
        write_packed(root / "balanced_train.h5", waveforms, targets)
        packed, out = root / "balanced_train.h5", root / "shards"
        timed_import("audioset-hdf5", packed, labels, out, "--workers", 0)  # warm-up: imports, page cache
        runs = []
        for workers in args.workers:
            for rate in (32000, 16000):
                options = ("--workers", workers, "--sample-rate", rate)
                seconds = min(timed_import("audioset-hdf5", packed, labels, out, *options) for _ in range(args.repeats))
                runs.append(("packed int16", args.clips, rate, workers, seconds))
        if args.mp3_clips:
            write_mp3(root / "mp3.hdf", waveforms[: args.mp3_clips], targets[: args.mp3_clips])
            for workers in args.workers:
                options = ("--workers", workers)
                seconds = min(
                    timed_import("audioset-mp3-hdf5", root / "mp3.hdf", labels, out, *options)
                    for _ in range(args.repeats)
                )
                runs.append(("mp3", args.mp3_clips, 32000, workers, seconds))
    print(f"AudioSet HDF5 import, 10 s clips, {os.cpu_count()} CPUs")
    print(f"{'layout':<13} {'clips':>6} {'to Hz':>6} {'workers':>7} {'seconds':>8} {'clips/s':>8}")
    for layout, clips, rate, workers, seconds in runs:
        print(f"{layout:<13} {clips:>6} {rate:>6} {workers:>7} {seconds:>8.2f} {clips / seconds:>8.1f}")


if __name__ == "__main__":
    main()
