"""What lets a run survive a crash or a preemption and carry on as if nothing happened.

- :class:`AtomicCheckpointIO`: checkpoints are written to a temporary file in the same directory,
  flushed to disk and renamed over the old one, so a kill during a save leaves the previous
  ``last.ckpt`` intact (Lightning writes the target file in place).
- :class:`StepSeed`: every training batch re-seeds torch, NumPy and ``random`` from (seed, epoch,
  batch index, rank). Dropout, mixup λ, SpecAugment stripes and waveform augmentations then
  depend only on where the batch is in the run, not on what consumed random numbers before it
  (loader start-up, validation), so a resumed run repeats them exactly without saving RNG states.
- :class:`EndOfRunCheckpoint`: ``last.ckpt`` also where fitting ends: at ``max_steps``, and on
  SIGTERM (SLURM preemption), after which Lightning finishes the current batch and raises
  ``SIGTERMException``.
- :func:`continue_loggers`: a resumed run appends to the same CSV and TensorBoard logs without
  duplicating the steps logged after the checkpoint, and resumes the same wandb run by id.

The data stream's part (skipping the batches an epoch already trained on) is in
``data/datamodule.py`` (:func:`~panns_lightning.data.datamodule.batches_done_in_epoch`).
"""

from __future__ import annotations

import logging
import random
import secrets
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from panns_lightning.atomic import atomic_open
from panns_lightning.models.checkpoint import load_weights_only

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
WANDB_ID_FILE = "wandb_run_id.txt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the target, fsync, then rename over it.

    Remote paths (``s3://``...) fall back to Lightning's writer: object stores replace whole
    objects anyway.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = str(path)
        if "://" in target and not target.startswith("file://"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target_path = Path(target.removeprefix("file://"))
        target_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(target_path) as stream:
            torch.save(checkpoint, stream)


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A 32-bit seed for one training batch of one rank, well mixed (SeedSequence)."""
    return int(np.random.SeedSequence([seed, epoch, batch_idx, rank]).generate_state(1)[0])


def seed_all(value: int) -> None:
    """Seed torch (all devices), NumPy's global generator and ``random``."""
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


class StepSeed(L.Callback):
    """Re-seed every random generator at the start of each training batch (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed_all(step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank))


class EndOfRunCheckpoint(L.Callback):
    """Save ``<dirpath>/last.ckpt`` where fitting ends: at ``max_steps`` and on SIGTERM (preemption).

    ModelCheckpoint saves at validations and every N steps only, so without this the weights of
    the steps after the last save would be lost when a run reaches ``max_steps`` between them.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.saved_path: Path | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fast_dev_run:
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self._save(trainer)
            if trainer.is_global_zero:
                log.warning("SIGTERM: saved %s at global step %d", self.saved_path, trainer.global_step)

    def _save(self, trainer: L.Trainer) -> None:
        path = self.dirpath / LAST_CHECKPOINT
        trainer.save_checkpoint(path, weights_only=False)  # the whole state: a resume needs the optimizer and loops
        self.saved_path = path


class LogStepFromGlobalStep(L.Callback):
    """Keep the logged ``step`` equal to the optimizer steps done, also after a resume.

    Lightning logs under a batch counter it restores from the checkpoint and then adjusts; after
    a resume from a checkpoint saved on the last batch of an epoch it adjusts once too often and
    every later row is one step late. Without gradient accumulation the counter must equal the
    global step, so it is set to it before each batch.
    """

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        epoch_loop = trainer.fit_loop.epoch_loop
        if trainer.accumulate_grad_batches == 1 and hasattr(epoch_loop, "_batches_that_stepped"):
            epoch_loop._batches_that_stepped = trainer.global_step


# --------------------------------------------------------------------------- resuming the loggers


def checkpoint_global_step(path: str | Path) -> int:
    """The global step a Lightning checkpoint was saved at (memory-mapped, weights only: cheap and safe)."""
    checkpoint = load_weights_only(path, mmap=True)
    return int(checkpoint.get("global_step", 0))


def continue_loggers(
    logger_cfgs: dict[str, Any], resume_step: int, output_dir: str | Path
) -> dict[str, dict[str, Any]]:
    """Overrides for each logger config so that a run resumed at ``resume_step`` continues its logs.

    Lightning logs a batch's metrics under the number of optimizer steps *before* it, so the
    batch that made global step G is row ``step = G - 1`` and a run resumed from a checkpoint at
    G logs from ``step = G`` on. CSV (:class:`~panns_lightning.training.loggers.ResumableCSVLogger`):
    rows with ``step >= G``, logged by the interrupted run after its checkpoint, are dropped from
    ``metrics.csv`` before it appends, so no step appears twice. TensorBoard: ``purge_step=G``
    makes the writer drop the interrupted run's events from G on. wandb: the run id kept in
    ``<output_dir>/wandb_run_id.txt`` is resumed.
    """
    overrides: dict[str, dict[str, Any]] = {}
    for name, cfg in logger_cfgs.items():
        target = str(cfg.get("_target_", ""))
        if target.endswith("ResumableCSVLogger"):
            overrides[name] = {"drop_steps_from": resume_step}
        elif target.endswith("TensorBoardLogger"):
            overrides[name] = {"purge_step": resume_step}
        elif target.endswith("WandbLogger"):
            overrides[name] = {"id": wandb_run_id(output_dir), "resume": "allow"}
    return overrides


def wandb_run_id(output_dir: str | Path) -> str:
    """This run directory's wandb id: created once, then reused by every resumed run."""
    path = Path(output_dir) / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id
