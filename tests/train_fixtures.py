"""Helpers for tests that run the training apps on a tiny synthetic AudioSet (see conftest.py).

The data is made by the real path: synthetic generator (AudioSet layout) → panns-prepare audioset
→ shards; models run at 16 kHz on 1 s clips with a few steps so every run stays fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RATE = 16000
# A Cnn6 small enough for a training step in well under a second on a CPU, SpecAugment off.
TINY_CNN6 = {
    "name": "Cnn6",
    "sample_rate": 8000,
    "window_size": 256,
    "hop_size": 80,
    "mel_bins": 32,
    "fmin": 50,
    "fmax": 4000,
    "time_stripes_num": 0,
    "freq_stripes_num": 0,
}
TINY_LABELS = [{"index": i, "mid": f"/m/{i}", "name": f"c{i}"} for i in range(3)]


def make_tiny_audioset(root: Path) -> Path:
    """A 1 s, 16 kHz synthetic AudioSet (6 classes, 96 train / 40 eval clips) converted to shards."""
    run(
        [
            BIN / "panns-prepare",
            "synthetic",
            "--out",
            root / "raw",
            "--num-classes",
            "6",
            "--num-train",
            "96",
            "--num-eval",
            "40",
            "--clip-seconds",
            "1",
            "--quiet",
        ]
    )
    for split, csv in (("train", "balanced_train_segments.csv"), ("eval", "eval_segments.csv")):
        run(
            [
                BIN / "panns-prepare",
                "audioset",
                "--segments",
                root / "raw" / csv,
                "--audio-dir",
                root / "raw" / "audio",
                "--labels",
                root / "raw" / "class_labels_indices.csv",
                "--out",
                root / split,
                "--sample-rate",
                str(RATE),
                "--clip-seconds",
                "1",
                "--min-shards",
                "4",
                "--workers",
                "1",
                "--quiet",
            ]
        )
    return root


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    """Run a console script from the repository root; fail with its output tails."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **kwargs.pop("env", {})}
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=REPO, **kwargs)
    if result.returncode != 0:
        raise AssertionError(
            f"{cmd[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def demo_overrides(data: Path, out: Path, model: str = "Cnn6", output_dir: bool = True) -> list[str]:
    """The demo experiment pointed at the tiny data; ``output_dir=False`` leaves run dirs to Hydra (sweeps)."""
    overrides = [
        "experiment=demo",
        f"model={model}",
        f"data.train_dir={data / 'train'}",
        f"data.val_dir={data / 'eval'}",
        f"data.test_dir={data / 'eval'}",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.steps_per_epoch=2",
        "data.shuffle_buffer=16",
        "model.sample_rate=16000",
        "model.window_size=512",
        "model.hop_size=160",
        "model.fmax=8000",
        f"paths.root_dir={out}",
    ]
    return overrides + ([f"paths.output_dir={out}"] if output_dir else [])
