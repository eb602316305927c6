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


# The DDP run every launcher test trains: world size 2 however its ranks are started (Lightning's
# launcher, torchrun with 2 nodes, SLURM), one thread per rank, so that their weights compare bit for bit.
DDP_STEPS = 6
DDP_ENV = {"OMP_NUM_THREADS": "1"}


def ddp_overrides(data: Path, root: Path, keys: Path) -> list[str]:
    """Gloo on CPU, DDP_STEPS steps in one epoch (one validation, at the end), a checkpoint every 2 steps,
    the clip keys of every step in ``keys`` (rank r > 0: ``keys.rank<r>``); launcher presets come on top."""
    return [
        *demo_overrides(data, root, output_dir=False),
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        f"trainer.max_steps={DDP_STEPS}",
        f"data.steps_per_epoch={DDP_STEPS}",
        "test=false",
        "trainer.enable_progress_bar=false",
        "callbacks.periodic_checkpoint.every_n_train_steps=2",
        "+callbacks.key_log._target_=panns_lightning.training.callbacks.TrainKeyLog",
        f"+callbacks.key_log.path={keys}",
    ]


def rank_keys(keys: Path, rank: int) -> list[list[str]]:
    """TrainKeyLog's lines of one rank: [step, epoch, batch index, "key,key,..."]."""
    path = keys if rank == 0 else keys.with_name(f"{keys.name}.rank{rank}")
    return [line.split() for line in path.read_text().splitlines()]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
