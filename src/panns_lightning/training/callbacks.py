"""Callbacks the training app adds: the final metrics as JSON next to the run; a log of drawn keys."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import lightning as L

from panns_lightning.training.metrics import TaggingScores


def scores_to_json(scores: TaggingScores | None, label_names: list[str]) -> dict[str, Any] | None:
    if scores is None:
        return None
    def clean(x: float) -> float | None:
        return None if math.isnan(x) else round(x, 6)
    return {
        **{k: clean(v) for k, v in scores.headline().items()},
        "num_clips": scores.num_clips,
        "per_class_ap": {name: clean(ap) for name, ap in zip(label_names, scores.per_class_ap)},
    }


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


class MetricsJSONWriter(L.Callback):
    """Writes ``metrics.json`` (last validation and test scores, step, epoch) on rank 0.

    Sweeps and the demo read this file instead of parsing logs.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _write(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        names = getattr(module, "label_names", [])
        write_json_atomic(self.path, {
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "val": scores_to_json(getattr(module, "last_val_scores", None), names),
            "test": scores_to_json(getattr(module, "last_test_scores", None), names),
        })

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, module)

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._write(trainer, module)


class TrainKeyLog(L.Callback):
    """Appends one line per training batch: ``<step> <epoch> <batch_idx> <key,key,...>``.

    ``step`` is the optimizer step the batch trains (global step + 1). This is how to check what a
    run drew, e.g. that a resumed run continues with the batches an uninterrupted one would have
    trained on: ``+callbacks.key_log._target_=panns_lightning.training.callbacks.TrainKeyLog
    +callbacks.key_log.path=keys.txt``. Rank r > 0 writes ``<path>.rank<r>``.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        path = self.path if trainer.global_rank == 0 else self.path.with_name(f"{self.path.name}.rank{trainer.global_rank}")
        keys = ",".join(str(key) for key in batch.get("key", []))
        with open(path, "a") as handle:
            handle.write(f"{trainer.global_step + 1} {trainer.current_epoch} {batch_idx} {keys}\n")
