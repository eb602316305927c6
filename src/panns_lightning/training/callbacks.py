"""Callbacks the training app adds: the final metrics as JSON next to the run; a log of drawn keys; a step timer."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from panns_lightning.atomic import atomic_write
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
    """``payload`` as indented JSON, written atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(payload, indent=2) + "\n")


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
        write_json_atomic(
            self.path,
            {
                "global_step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "val": scores_to_json(getattr(module, "last_val_scores", None), names),
                "test": scores_to_json(getattr(module, "last_test_scores", None), names),
            },
        )

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

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        path = (
            self.path
            if trainer.global_rank == 0
            else self.path.with_name(f"{self.path.name}.rank{trainer.global_rank}")
        )
        keys = ",".join(str(key) for key in batch.get("key", []))
        with open(path, "a") as handle:
            handle.write(f"{trainer.global_step + 1} {trainer.current_epoch} {batch_idx} {keys}\n")


class StepTimer(L.Callback):
    """Times the training loop in steady state; writes ``path`` (JSON) when training ends (rank 0).

    A host clock reading (``time.perf_counter``) at every ``on_train_batch_end``; the first
    ``warmup_steps`` batches (worker start-up, shuffle-buffer filling, cuDNN autotuning, compile)
    open the window, which runs to the last batch. Per step it only reads the clock and the batch's
    leading dimension (host metadata): no device sync. With ``sync_edges`` the device is
    synchronised twice per run, at the two batches that bound the window (the last warm-up batch and
    the run's last step, ``trainer.max_steps``), so that the window holds exactly the device work of
    its steps; without it a sync-free step lets the host run up to ``trainer.log_every_n_steps``
    steps ahead of the device at either end. The JSON holds: ``steps_timed``, ``seconds``,
    ``clips`` and ``clips_per_s`` over the window (this rank's clips read; the network trains on
    half as many examples with mixup), ``batch_size``, ``median_step_s``, the window's wall-clock
    edges (``window_start_unix``, ``window_end_unix``: to match samples of other tools, e.g. GPU
    utilisation) and ``world_size``. Add it to a run with
    ``+callbacks.step_timer._target_=panns_lightning.training.callbacks.StepTimer
    +callbacks.step_timer.path=step_timer.json`` (``benchmarks/bench_loop.py`` does).
    """

    def __init__(self, path: str, warmup_steps: int = 10, sync_edges: bool = True) -> None:
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1 (the window opens at a batch's end), got {warmup_steps}")
        self.path = Path(path)
        self.warmup_steps = int(warmup_steps)
        self.sync_edges = bool(sync_edges)
        self._clock: list[float] = []
        self._wall: list[float] = []
        self._clips: list[int] = []
        self._synced: list[bool] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock, self._wall, self._clips, self._synced = [], [], [], []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        done = len(self._clock) + 1
        edge = done == self.warmup_steps or (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps)
        if edge and self.sync_edges and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._clock.append(time.perf_counter())
        self._wall.append(time.time())
        self._clips.append(batch_clips(batch))
        self._synced.append(edge and self.sync_edges)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            write_json_atomic(self.path, self.summary(trainer.world_size))

    def summary(self, world_size: int = 1) -> dict[str, Any]:
        """What ``on_train_end`` writes (``clips_per_s`` None when the run was shorter than the warm-up + 1)."""
        first = self.warmup_steps - 1  # the batch whose end opens the window
        timed = len(self._clock) - 1 - first
        payload: dict[str, Any] = {
            "warmup_steps": self.warmup_steps,
            "steps_timed": max(timed, 0),
            "seconds": None,
            "clips": None,
            "clips_per_s": None,
            "median_step_s": None,
            "batch_size": self._clips[0] if self._clips else None,
            "window_start_unix": None,
            "window_end_unix": None,
            "synced_edges": False,
            "world_size": int(world_size),
        }
        if timed < 1:
            return payload
        seconds = self._clock[-1] - self._clock[first]
        clips = sum(self._clips[first + 1 :])
        steps = sorted(b - a for a, b in zip(self._clock[first:], self._clock[first + 1 :]))
        payload.update(
            seconds=seconds,
            clips=clips,
            clips_per_s=clips / seconds if seconds > 0 else None,
            median_step_s=steps[len(steps) // 2],
            window_start_unix=self._wall[first],
            window_end_unix=self._wall[-1],
            synced_edges=self._synced[first] and self._synced[-1],
        )
        return payload


def batch_clips(batch: Any) -> int:
    """The leading dimension of a batch's waveform (or first tensor): a shape read, no device sync."""
    if isinstance(batch, dict):
        value = batch.get("waveform", next((v for v in batch.values() if hasattr(v, "shape")), None))
    elif isinstance(batch, (list, tuple)) and batch:
        value = batch[0]
    else:
        value = batch
    shape = getattr(value, "shape", None)
    return int(shape[0]) if shape else 0
