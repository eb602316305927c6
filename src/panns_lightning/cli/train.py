"""panns-train: compose the config → data, module, callbacks, loggers → fit → test.

No training logic lives here: the objects come from :mod:`panns_lightning.cli.build`, what they
do from ``training/`` and ``data/``. Under DDP, :mod:`panns_lightning.cli.ddp` keeps one run
directory and one log per run (docs/distributed.md).
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from panns_lightning.cli.build import build_datamodule, build_loggers, build_module, build_trainer, resolve_ckpt_path
from panns_lightning.cli.config_schema import validate_train_config
from panns_lightning.cli.ddp import child_rank_command, distributed_scope, quiet_non_zero_rank
from panns_lightning.cli.entry import console_entry
from panns_lightning.cli.hydra_app import find_config_dir, run_app
from panns_lightning.cli.preflight import preflight_train
from panns_lightning.training.fault_tolerance import EndOfRunCheckpoint, checkpoint_global_step

log = logging.getLogger("panns_lightning.train")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job; returns the final metrics (also written to metrics.json)."""
    cfg = validate_train_config(cfg)
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
    with child_rank_command(trainer), distributed_scope():
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:
            saved = next((cb.saved_path for cb in trainer.callbacks if isinstance(cb, EndOfRunCheckpoint)), None)
            where = f"checkpoint {saved}" if saved else "no checkpoint (callbacks.end_checkpoint is off)"
            raise Preempted(f"stopped by SIGTERM at global step {trainer.global_step}; {where}") from None
        results: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if cfg.test and cfg.data.test_dir:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            results.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    return results


class Preempted(RuntimeError):
    """The run was stopped by SIGTERM (e.g. SLURM preemption) after saving where it was."""


@console_entry
@hydra.main(version_base="1.3", config_path=find_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        results = run_app("panns-train", lambda: train(cfg))
    except Preempted as stop:
        # 128 + SIGTERM: what a job killed by SIGTERM reports; schedulers requeue on it.
        log.warning("panns-train: %s; resume with ckpt_path=auto", stop)
        raise SystemExit(143) from None
    # The value a sweeper optimises: validation mAP.
    return results.get("val/mAP")


if __name__ == "__main__":
    main()
