"""The Hydra callbacks of the apps, enabled in ``conf/train.yaml`` and the fine-tuning experiments.

Hydra instantiates callbacks for every run (single runs and DDP child ranks included), so this
module imports nothing heavy at start-up; each callback imports what it needs when it fires.

- :class:`RedactionCallback`: mask secrets in the job's saved ``.hydra/*.yaml`` and log handlers;
- :class:`SweepReportCallback`: ``sweep_summary.{md,csv,png}`` when a panns-train multirun ends;
- :class:`CVReportCallback`: ``cv_summary.{json,md}`` + confusion matrix when a fine-tuning sweep ends.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from panns_lightning.cli import hydra_app
from panns_lightning.redact import install_log_redaction

log = logging.getLogger("panns_lightning.sweep")


class RedactionCallback(Callback):
    """Hydra callback: mask secrets in log handlers and in the files Hydra has just saved.

    Hydra writes ``.hydra/{config,hydra,overrides}.yaml`` (and a sweep's ``multirun.yaml``) before
    the task function runs; ``on_job_start`` is the first moment after that, so secrets never
    reach the job's log file and stay on disk for a moment only. Enable under ``hydra.callbacks``.
    """

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        install_log_redaction()  # the launcher logs each job's overrides

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        install_log_redaction()
        hydra_app.redact_job_files(config.hydra)


class SweepReportCallback(Callback):
    """``on_multirun_end``: ``panns-sweep-report <hydra.sweep.dir> --metric <metric>`` (``${optimized_metric}``)."""

    def __init__(self, metric: str, higher_is_better: bool | None = None, plot: bool = True) -> None:
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


class CVReportCallback(Callback):
    """Write the cross-validation report into the sweep directory when a multirun ends.

    Enable with ``hydra.callbacks.cv_report._target_=panns_lightning.cli.hydra_callbacks.CVReportCallback``
    (the finetune experiments do). A failure is printed, not raised: the fold runs are done and
    ``panns-cv-report SWEEP_DIR`` can be run again by hand.
    """

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from panns_lightning.training.cv_report import SUMMARY_MD, CVReportError, format_cv_table, write_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            summary = write_report(sweep_dir, title=str(config.get("task_name", sweep_dir.name)))
        except CVReportError as error:
            print(f"cv report: {error}")
            return
        print(format_cv_table(summary))
        print(f"cv report: {sweep_dir / SUMMARY_MD}")
