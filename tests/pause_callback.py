"""A test-only callback for the SLURM tests: hold a job at a chosen step until SLURM signals it.

Imported inside the job's processes (the tests put tests/ on PYTHONPATH). It only sleeps, so the
run trains exactly what it would without it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L


class PauseAtStep(L.Callback):
    """After global step ``steps[r]`` of the r-th start of a SLURM job (``SLURM_RESTART_COUNT``), wait for SIGTERM.

    Rank 0 writes ``<marker_dir>/paused-<r>-<step>`` when it starts waiting, so a test knows when to
    preempt. Gives up after ``limit_s`` (a test that never signals fails instead of hanging).
    """

    def __init__(self, steps: dict[Any, int], marker_dir: str, limit_s: float = 300) -> None:
        self.steps = {int(restart): int(step) for restart, step in steps.items()}
        self.marker_dir = Path(marker_dir)
        self.limit_s = limit_s

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if self.steps.get(restart) != trainer.global_step:
            return
        if trainer.global_rank == 0:
            self.marker_dir.mkdir(parents=True, exist_ok=True)
            (self.marker_dir / f"paused-{restart}-{trainer.global_step}").write_text(str(time.time()))
        deadline = time.monotonic() + self.limit_s
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.1)
