"""Acceptance (issue 8): kill panns-train, resume it, and get the run an uninterrupted one would have made.

The runs use the tiny synthetic AudioSet of conftest.py (the demo's generator and converter) with
2 DataLoader workers, mixup and a periodic checkpoint every 4 steps; ``TrainKeyLog`` records which
clips every step trained on.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from train_fixtures import BIN, REPO, demo_overrides, run

MAX_STEPS = 14
EVERY = 4


def overrides(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        *demo_overrides(data, out),
        f"hydra.run.dir={out}",
        "data.num_workers=2",
        "data.steps_per_epoch=5",
        f"trainer.max_steps={MAX_STEPS}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "test=false",
        f"callbacks.periodic_checkpoint.every_n_train_steps={EVERY}",
        "+callbacks.key_log._target_=panns_lightning.training.callbacks.TrainKeyLog",
        f"+callbacks.key_log.path={out / 'keys.txt'}",
        *extra,
    ]


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [str(BIN / "panns-train"), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def key_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.is_file() else []


def wait_for(condition, proc: subprocess.Popen, what: str, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"panns-train ended before {what}:\n{proc.stdout.read()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} after {limit} s")
        time.sleep(0.1)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def logged_steps(out: Path) -> list[int]:
    with open(out / "csv" / "metrics.csv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]


@pytest.fixture(scope="module", params=["stream", "panns"])
def sampler(request: pytest.FixtureRequest) -> str:
    """data.sampler: the shard stream, and PANNs' sampler by random access (its state is in the checkpoint)."""
    return request.param


@pytest.fixture(scope="module")
def uninterrupted(tiny_audioset: Path, sampler: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run([BIN / "panns-train", *overrides(tiny_audioset, out, f"data.sampler={sampler}")])
    return out


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_same_run(
    tiny_audioset: Path, sampler: str, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = overrides(tiny_audioset, out, f"data.sampler={sampler}")
    proc = start(args)
    last = out / "checkpoints" / "last.ckpt"
    # Kill once a checkpoint exists and the run has gone on past it, well before its end.
    wait_for(lambda: last.is_file() and len(key_lines(out / "keys.txt")) >= EVERY + 3, proc, "a checkpoint")
    assert proc.poll() is None, "the run must still be going when it is killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(key_lines(out / "keys.txt"))
    assert killed_at < MAX_STEPS
    checkpoint = load(last)
    checkpoint_step = checkpoint["global_step"]
    assert 0 < checkpoint_step < killed_at
    if sampler == "panns":  # the draw position of the next batch: 4 clips per step since the start
        assert checkpoint["AudioShardDataModule"]["panns_sampler"]["position"] == checkpoint_step * 4

    (out / "keys.txt").rename(out / "keys_before_kill.txt")
    run([BIN / "panns-train", *args, "ckpt_path=auto"])

    resumed = key_lines(out / "keys.txt")
    expected = key_lines(uninterrupted / "keys.txt")
    assert int(resumed[0][0]) == checkpoint_step + 1, "the resumed run starts right after its checkpoint"
    assert int(resumed[-1][0]) == int(expected[-1][0]) == MAX_STEPS
    # Same steps, epochs, batch positions and clip keys as the uninterrupted run from there on.
    assert resumed == expected[checkpoint_step:]

    final, reference = load(last), load(uninterrupted / "checkpoints" / "last.ckpt")
    assert final["global_step"] == reference["global_step"] == MAX_STEPS
    for name, tensor in reference["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    # The CSV log continues: every step once, as in the uninterrupted run.
    assert logged_steps(out) == logged_steps(uninterrupted) == list(range(MAX_STEPS))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_at_that_step(tiny_audioset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = overrides(
        tiny_audioset,
        out,
        "trainer.max_steps=100000",
        "callbacks.periodic_checkpoint.every_n_train_steps=100000",
        "data.steps_per_epoch=100000",
    )
    proc = start(args)
    wait_for(lambda: len(key_lines(out / "keys.txt")) >= 3, proc, "3 training steps")
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output[-3000:]
    last_step = int(key_lines(out / "keys.txt")[-1][0])  # the batch in flight is finished first
    checkpoint = load(out / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == last_step
    assert "stopped by SIGTERM" in output and f"global step {last_step}" in output
