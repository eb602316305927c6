"""A Hydra callback that writes the sweep report when a panns-train multirun ends.

Enabled in ``conf/train.yaml`` under ``hydra.callbacks``; imports nothing heavy at start-up
because Hydra instantiates callbacks for every run, single runs and DDP child ranks included.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("panns_lightning.sweep")


class SweepReportCallback(Callback):
    """``on_multirun_end``: ``panns-sweep-report <hydra.sweep.dir> --metric <metric>``."""

    def __init__(self, metric: str = "val/mAP", higher_is_better: bool | None = None, plot: bool = True) -> None:
        self.metric = metric
        self.higher_is_better = higher_is_better
        self.plot = plot

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from panns_lightning.cli.sweep_report import format_markdown_table, write_sweep_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = write_sweep_report(sweep_dir, self.metric, self.higher_is_better, plot=self.plot)
        except (FileNotFoundError, ValueError) as error:
            # A report is a convenience: never turn a finished sweep into a failure.
            log.warning("sweep report for %s not written: %s", sweep_dir, error)
            return
        log.info("sweep summary (%s):\n%s", report.files[0].parent, format_markdown_table(report))
