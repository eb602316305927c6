"""The training progress bar with real totals: ``Epoch 2/3`` of an endless stream.

The training stream never ends, so runs stop at ``trainer.max_steps`` with ``max_epochs: -1``, and
Lightning's bar then counts epochs against ``max_epochs - 1`` ("Epoch 0/-2"). Here the number of
epochs is derived from what the run will really do: ``max_steps`` steps of ``limit_train_batches``
(= ``data.steps_per_epoch``) each. Rich's bar when rich is installed (Lightning's own choice),
tqdm's otherwise.
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


def planned_epochs(trainer: L.Trainer) -> int | None:
    """Epochs this run will train: from ``max_epochs``, or from ``max_steps`` over the steps per epoch."""
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        return trainer.max_epochs
    steps_per_epoch = trainer.num_training_batches
    if trainer.max_steps > 0 and math.isfinite(steps_per_epoch) and steps_per_epoch > 0:
        return math.ceil(trainer.max_steps / steps_per_epoch)
    return None


def epoch_label(trainer: L.Trainer, current_epoch: int) -> str:
    """``Epoch 1/3`` (counted from 1), or ``Epoch 1`` when the total is unknown."""
    total = planned_epochs(trainer)
    return f"Epoch {current_epoch + 1}/{total}" if total else f"Epoch {current_epoch + 1}"


class RichStepProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        label = epoch_label(self.trainer, current_epoch)
        return f"{label:{len(self.validation_description)}}"


class TQDMStepProgressBar(TQDMProgressBar):
    def on_train_epoch_start(self, trainer: L.Trainer, *args: object) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(epoch_label(trainer, trainer.current_epoch))


def step_progress_bar() -> RichProgressBar | TQDMProgressBar:
    """The bar Lightning would pick (rich if available), labelled with the run's real epoch count."""
    return RichStepProgressBar() if _RICH_AVAILABLE else TQDMStepProgressBar()
