"""A CSV logger that continues an interrupted run's ``metrics.csv`` instead of deleting it.

Lightning's CSVLogger removes an existing ``metrics.csv`` when it starts, so a resumed run would
lose every row before its checkpoint. This one appends: the header is read back, so new rows
line up with old columns; rows the interrupted run logged after its checkpoint are removed
before the resumed run starts (``fault_tolerance.continue_loggers``), so no step appears twice.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


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
    """CSVLogger whose writer appends to an existing ``metrics.csv`` (see the module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:  # type: ignore[override]
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
