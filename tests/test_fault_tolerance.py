"""The pieces that make resuming exact and saving safe (training/fault_tolerance.py, loggers.py, numerics.py)."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from panns_lightning.training.fault_tolerance import (
    AtomicCheckpointIO,
    StepSeed,
    continue_loggers,
    step_seed,
    wandb_run_id,
)
from panns_lightning.training.loggers import ResumableCSVLogger, truncate_csv_log
from panns_lightning.training.module import TaggingModule
from panns_lightning.training.numerics import NonFiniteGuard, NonFiniteTrainingError
from train_fixtures import TINY_CNN6, TINY_LABELS

# ----------------------------------------------------------------------------- atomic saves


def test_a_failing_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, target)

    def write_half_then_die(obj: object, stream) -> None:  # noqa: ANN001
        stream.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["global_step"] == 1
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file is left"


@pytest.mark.slow
def test_sigkill_during_saves_never_breaks_last_ckpt(tmp_path: Path) -> None:
    """A process saving a 64 MB checkpoint over and over is killed at some point of a save."""
    target = tmp_path / "last.ckpt"
    script = textwrap.dedent(f"""
        import torch
        from panns_lightning.training.fault_tolerance import AtomicCheckpointIO
        io, step = AtomicCheckpointIO(), 0
        while True:
            step += 1
            io.save_checkpoint({{"global_step": step, "w": torch.full((16_000_000,), float(step))}}, {str(target)!r})
            print(step, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for _ in range(3):
        assert proc.stdout.readline(), "the saver died"
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoint = torch.load(target, weights_only=True)
    assert checkpoint["global_step"] >= 3
    assert torch.all(checkpoint["w"] == float(checkpoint["global_step"]))


# ----------------------------------------------------------------------------- seeds


def test_step_seed_depends_on_every_part() -> None:
    base = step_seed(1, 2, 3, 0)
    assert base == step_seed(1, 2, 3, 0)
    assert len({base, step_seed(2, 2, 3, 0), step_seed(1, 3, 3, 0), step_seed(1, 2, 4, 0), step_seed(1, 2, 3, 1)}) == 5


@pytest.mark.slow
def test_step_seed_makes_random_draws_a_function_of_the_batch() -> None:
    callback = StepSeed(seed=5)

    class FakeTrainer:
        current_epoch, global_rank = 1, 0

    callback.on_train_batch_start(FakeTrainer(), None, None, 7)  # type: ignore[arg-type]
    first = torch.rand(3)
    torch.rand(100)  # whatever ran in between (a validation, a loader start) does not matter
    callback.on_train_batch_start(FakeTrainer(), None, None, 7)  # type: ignore[arg-type]
    assert torch.equal(torch.rand(3), first)


# ----------------------------------------------------------------------------- loggers


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "step", "train/loss"])
        writer.writeheader()
        writer.writerows(rows)


def test_truncate_csv_drops_rows_logged_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    write_csv(path, [{"epoch": 0, "step": step, "train/loss": 1.0} for step in range(10)])
    assert truncate_csv_log(path, resume_step=6) == 4
    with open(path, newline="") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == list(range(6))


def test_resumable_csv_logger_appends_under_the_old_header(tmp_path: Path) -> None:
    write_csv(tmp_path / "csv" / "metrics.csv", [{"epoch": 0, "step": 0, "train/loss": 2.0}])
    logger = ResumableCSVLogger(tmp_path, name="csv", version="", flush_logs_every_n_steps=1)
    logger.log_metrics({"train/loss": 1.0, "epoch": 0}, step=1)
    logger.save()
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["step"], row["train/loss"]) for row in rows] == [("0", "2.0"), ("1", "1.0")]


def test_continue_loggers_purges_tensorboard_and_resumes_wandb_by_id(tmp_path: Path) -> None:
    configs = {
        "tensorboard": {"_target_": "lightning.pytorch.loggers.TensorBoardLogger", "save_dir": str(tmp_path)},
        "wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger", "save_dir": str(tmp_path)},
    }
    run_id = wandb_run_id(tmp_path)
    overrides = continue_loggers(configs, resume_step=12, output_dir=tmp_path)
    assert overrides["tensorboard"] == {"purge_step": 12}
    assert overrides["wandb"] == {"id": run_id, "resume": "allow"}
    assert wandb_run_id(tmp_path) == run_id, "the id is kept in the run directory"


# ----------------------------------------------------------------------------- non-finite steps


def test_guard_skips_and_stops_after_k_in_a_row() -> None:
    guard = NonFiniteGuard(max_consecutive=3)
    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.tensor([1.0, float("nan")])
    guard.note_batch(torch.tensor(0.5), ["a", "b"])
    assert guard.check([weight], global_step=10) is True and weight.grad is None
    weight.grad = torch.ones(2)
    guard.note_batch(torch.tensor(0.5), ["c"])
    assert guard.check([weight], global_step=11) is False and guard.consecutive == 0
    for step in (12, 13):
        guard.note_batch(torch.tensor(float("inf")), ["bad1", "bad2"])
        assert guard.check([weight], global_step=step)
    guard.note_batch(torch.tensor(float("nan")), ["bad3"])
    with pytest.raises(NonFiniteTrainingError, match=r"3 consecutive steps \(13\.\.15\).*bad3.*max_nonfinite_steps=3"):
        guard.check([weight], global_step=14)
    assert guard.skipped == 4


def nan_batches(poisoned: set[int], count: int) -> list[dict]:
    batches = []
    for index in range(count):
        waveform = torch.randn(4, 4000) * 0.1
        if index in poisoned:
            waveform[0, 100] = float("nan")
        target = torch.zeros(4, 3)
        target[:, index % 3] = 1.0
        batches.append({"waveform": waveform, "target": target, "key": [f"b{index}c{clip}" for clip in range(4)]})
    return batches


def tiny_module(max_nonfinite_steps: int) -> TaggingModule:
    return TaggingModule(
        TINY_CNN6, TINY_LABELS, augment={"mixup": {"enabled": False}}, max_nonfinite_steps=max_nonfinite_steps
    )


def fit(module: TaggingModule, batches: list[dict], tmp_path: Path) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=len(batches),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return trainer


@pytest.mark.slow
def test_a_nan_batch_is_skipped_and_the_weights_stay_finite(tmp_path: Path) -> None:
    module = tiny_module(max_nonfinite_steps=3)
    fit(module, nan_batches({1, 4}, 6), tmp_path)
    assert module.nonfinite.skipped == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.slow
def test_k_nan_batches_in_a_row_stop_the_run_naming_steps_and_keys(tmp_path: Path) -> None:
    module = tiny_module(max_nonfinite_steps=2)
    with pytest.raises(NonFiniteTrainingError, match=r"2 consecutive steps \(3\.\.4\).*b3c0"):
        fit(module, nan_batches({2, 3}, 6), tmp_path)


def test_resumed_loggers_are_built_with_purge_step_and_the_same_wandb_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra import compose, initialize_config_dir

    from panns_lightning.cli.build import build_loggers
    from panns_lightning.cli.hydra_app import find_config_dir

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    paths = [f"paths.output_dir={tmp_path}", f"paths.root_dir={tmp_path}"]
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        many = compose("train", overrides=["logger=many", *paths])
        wandb_only = compose("train", overrides=["logger=wandb", *paths])
    resumed = {type(logger).__name__: logger for logger in build_loggers(many, resume_step=7)}
    assert set(resumed) == {"ResumableCSVLogger", "TensorBoardLogger"}
    assert resumed["TensorBoardLogger"]._kwargs["purge_step"] == 7
    (first,) = build_loggers(wandb_only)
    (again,) = build_loggers(wandb_only, resume_step=7)
    assert again._wandb_init["id"] == first._wandb_init["id"] == wandb_run_id(tmp_path)
    assert again._wandb_init["resume"] == "allow"
