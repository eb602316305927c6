"""panns-train: compose the config → data, module, callbacks, loggers → fit → test.

No training logic lives here: the objects come from :mod:`panns_lightning.cli.build`, what they
do from ``training/`` and ``data/``. Under DDP, :mod:`panns_lightning.cli.ddp` keeps one run
directory and one log per run (docs/distributed.md).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from panns_lightning.cli.build import build_datamodule, build_loggers, build_module, build_trainer, resolve_ckpt_path
from panns_lightning.cli.config_schema import validate_train_config
from panns_lightning.cli.ddp import child_rank_command, distributed_scope, quiet_non_zero_rank
from panns_lightning.cli.dry_run import dry_run
from panns_lightning.cli.entry import console_entry
from panns_lightning.cli.hydra_app import find_config_dir, run_app
from panns_lightning.cli.preflight import preflight_train
from panns_lightning.cli.resume import lost_rank_message
from panns_lightning.cli.time_limit import SubmititTimeLimit
from panns_lightning.training.fault_tolerance import EndOfRunCheckpoint, checkpoint_global_step
from panns_lightning.training.lost_rank import LostRankWatch, lost_rank_heartbeat_stopped

log = logging.getLogger("panns_lightning.train")
# A rank of the run was lost (cli/resume.py prints which and how to resume); 1 like any failure.
LOST_RANK_EXIT_CODE = 1
# What gloo's transport errors say (they are plain RuntimeErrors, not torch.distributed.DistError).
GLOO_ERROR_MARKERS = ("gloo/transport", "Connection closed by peer", "Connection reset by peer")


def train(cfg: DictConfig, time_limit: SubmititTimeLimit | None = None) -> dict[str, Any]:
    """Run one training job; returns the final metrics (also written to metrics.json).

    ``time_limit``: a submitit job's time-limit signal, which stops training like SIGTERM (cli/time_limit.py).
    """
    cfg = validate_train_config(cfg)
    if cfg.dry_run:  # what the run would do, without GPUs or training (cli/dry_run.py)
        preflight_train(cfg, gpus=False)
        print("\n".join(dry_run(cfg)), flush=True)
        return {}
    preflight_train(cfg)
    quiet_non_zero_rank()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data, cfg.speed)
    module = build_module(cfg, datamodule)
    ckpt_path = resolve_ckpt_path(cfg)
    resume_step = checkpoint_global_step(ckpt_path) if ckpt_path else None
    if resume_step is not None:
        log.info("resuming %s at global step %d", ckpt_path, resume_step)
    trainer = build_trainer(cfg, build_loggers(cfg, resume_step))
    if time_limit is not None and time_limit.enabled:
        trainer.callbacks.append(time_limit.callback())
    watch = next((cb for cb in trainer.callbacks if isinstance(cb, LostRankWatch)), None)
    with child_rank_command(trainer), distributed_scope(), lost_rank_heartbeat_stopped(watch):
        try:
            results = fit_and_test(cfg, trainer, module, datamodule, ckpt_path)
        except SIGTERMException:
            saved = next((cb.saved_path for cb in trainer.callbacks if isinstance(cb, EndOfRunCheckpoint)), None)
            where = f"checkpoint {saved}" if saved else "no checkpoint (callbacks.end_checkpoint is off)"
            raise Preempted(f"stopped by SIGTERM at global step {trainer.global_step}; {where}") from None
        except Exception as error:
            # This rank's own error (a bug, the data's error budget, ...) stays its own.
            report = watch.diagnose(trainer) if watch is not None and is_collective_error(error) else None
            if report is None:
                raise
            raise RankLost(lost_rank_message(report, cfg, error), reporter=report.reporter) from None
    return results


def fit_and_test(
    cfg: DictConfig, trainer: L.Trainer, module: Any, datamodule: Any, ckpt_path: str | None
) -> dict[str, Any]:
    """Fit, then test the best checkpoint when ``cfg.test``; the final metrics."""
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    results: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if cfg.test and cfg.data.test_dir:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        results.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    return results


def is_collective_error(error: BaseException) -> bool:
    """A failed or timed-out collective: torch.distributed's errors (NCCL's among them) and gloo's plain
    RuntimeErrors (``[.../gloo/transport/tcp/pair.cc:547] Connection closed by peer [127.0.0.1]:7808``)."""
    import torch.distributed as dist

    if isinstance(error, dist.DistError):  # DistBackendError, DistNetworkError, DistStoreError
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in GLOO_ERROR_MARKERS)


class Preempted(RuntimeError):
    """The run was stopped by SIGTERM (e.g. SLURM preemption) after saving where it was."""


class RankLost(RuntimeError):
    """A rank of a DDP run was lost; the message is the one line the lowest surviving rank prints."""

    def __init__(self, message: str, reporter: bool) -> None:
        super().__init__(message)
        self.reporter = reporter


@console_entry
@hydra.main(version_base="1.3", config_path=find_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    with SubmititTimeLimit() as time_limit:
        try:
            results = run_app("panns-train", lambda: train(cfg, time_limit))
        except Preempted as stop:
            log.warning("panns-train: %s; resume with ckpt_path=auto", stop)
            if time_limit.received:
                time_limit.requeue()  # submitit requeues the job (rank 0) and exits
            # 128 + SIGTERM: what a job killed by SIGTERM reports; schedulers requeue on it.
            raise SystemExit(143) from None
        except RankLost as lost:
            # One line from the lowest surviving rank, nothing from the others; no traceback.
            if lost.reporter:
                print(f"panns-train: {lost}", file=sys.stderr, flush=True)
            raise SystemExit(LOST_RANK_EXIT_CODE) from None
    # The value a sweeper optimises: the config's optimized_metric (conf/train.yaml).
    return results.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
