"""A CSV logger that continues an interrupted run's ``metrics.csv`` instead of deleting it.

Lightning's CSVLogger removes an existing ``metrics.csv`` when it starts, so a resumed run would
lose every row before its checkpoint. This one appends: the header is read back, so new rows
line up with old columns; rows the interrupted run logged after its checkpoint
(``drop_steps_from``, set by ``fault_tolerance.continue_loggers``) are removed before it
appends, so no step appears twice.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from panns_lightning.atomic import atomic_open

log = logging.getLogger(__name__)


class AppendingExperimentWriter(ExperimentWriter):
    """ExperimentWriter that keeps an existing ``metrics.csv`` and its columns."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = sorted(next(csv.reader(handle), []))

    def _check_log_dir_exists(self) -> None:
        """Keep what is there (the base class deletes metrics.csv)."""


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose writer appends to an existing ``metrics.csv`` (see the module docstring).

    ``drop_steps_from``: rows with ``step >=`` it are removed from an existing ``metrics.csv``
    first (a run resumed from a checkpoint at that global step logs them again).
    """

    def __init__(self, *args: Any, drop_steps_from: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drop_steps_from = drop_steps_from

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:  # type: ignore[override]
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            if self.drop_steps_from is not None:
                truncate_csv_log(Path(self.log_dir) / AppendingExperimentWriter.NAME_METRICS_FILE, self.drop_steps_from)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def truncate_csv_log(path: Path, resume_step: int) -> int:
    """Drop rows with ``step >= resume_step`` (atomically); returns how many were dropped."""
    if not path.is_file():
        return 0
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        rows = list(reader)
    kept = [row for row in rows if not row.get("step") or int(float(row["step"])) < resume_step]
    if len(kept) == len(rows):
        return 0
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    log.info("resume: dropped %d rows from step %d on from %s", len(rows) - len(kept), resume_step, path)
    return len(rows) - len(kept)
