"""panns-train: compose the config → data, module, callbacks, loggers → fit → test.

No training logic lives here; see ``training/module.py`` and ``data/datamodule.py``.

Under DDP there is one run directory per run (docs/distributed.md): Lightning re-executes this
script for the other local ranks and, when Hydra is in use, passes them the parent's
``hydra.run.dir`` with ``hydra.output_subdir=null``. :func:`child_rank_command` makes that command
right for sweeps too (a job's own overrides instead of ``-m`` and the whole sweep; the job's own
directory; no log file of their own), and :func:`quiet_non_zero_rank` stops ranks started by
torchrun or SLURM from appending to rank 0's log file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, read_write

from panns_lightning.cli.config_schema import ConfigError, validate_train_config
from panns_lightning.cli.hydra_app import find_config_dir
from panns_lightning.cli.preflight import preflight_train
from panns_lightning.data.datamodule import DataErrorBudgetExceeded
from panns_lightning.training.fault_tolerance import (
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    EndOfRunCheckpoint,
    checkpoint_global_step,
    continue_loggers,
    wandb_run_id,
)
from panns_lightning.cli.hydra_app import redact_hydra_run
from panns_lightning.redact import redact
from panns_lightning.training.numerics import NonFiniteTrainingError

log = logging.getLogger("panns_lightning.train")


def build_datamodule(data: DictConfig, speed: DictConfig | None = None) -> Any:
    from panns_lightning.data import AudioShardDataModule

    kwargs = OmegaConf.to_container(data, resolve=True)
    assert isinstance(kwargs, dict)
    crop_seconds = kwargs.pop("train_crop_seconds")
    if speed is not None:
        kwargs.update(int16_batches=bool(speed.int16_batches), pin_memory=bool(speed.pin_memory))
    datamodule = AudioShardDataModule(**kwargs)
    if crop_seconds is not None:
        datamodule.train_crop_samples = int(round(crop_seconds * datamodule.sample_rate))
    return datamodule


def build_module(cfg: DictConfig, datamodule: Any) -> Any:
    from panns_lightning.training.augment import AugmentOptions
    from panns_lightning.training.module import TaggingModule
    from panns_lightning.training.speed import SpeedOptions

    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model_config, dict)
    if int(model_config["sample_rate"]) != int(datamodule.sample_rate):
        raise ConfigError(
            f"model.sample_rate={model_config['sample_rate']} but the shards in {cfg.data.train_dir} "
            f"are at {datamodule.sample_rate} Hz: convert the data at the model's rate or pick a model "
            "whose front end matches"
        )
    # How the network computes, not what: saved with the model config so evaluators build it alike.
    model_config["stft"] = str(cfg.speed.stft)
    model_config["wave_conv2d"] = bool(cfg.speed.wave_conv2d)
    speed = SpeedOptions(
        channels_last=bool(cfg.speed.channels_last),
        compile=bool(cfg.speed.compile),
        compile_mode=str(cfg.speed.compile_mode),
        fused_adam=bool(cfg.speed.fused_adam),
        sync_free=bool(cfg.speed.sync_free),
    )
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    assert isinstance(optim, dict)
    return TaggingModule(
        model_config=model_config,
        labels=list(datamodule.labels),
        multilabel=bool(datamodule.multilabel),
        augment=AugmentOptions.from_dict(OmegaConf.to_container(cfg.augment, resolve=True)),
        speed=speed,
        betas=tuple(optim.pop("betas")),
        **optim,
    )


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=auto``: resume from the run's ``last.ckpt`` when it exists (requeued jobs), else start fresh."""
    if cfg.ckpt_path != "auto":
        return cfg.ckpt_path
    directory = checkpoint_dir(cfg)
    last = directory / LAST_CHECKPOINT
    if last.is_file():
        log.info("ckpt_path=auto: resuming from %s", last)
        return str(last)
    log.info("ckpt_path=auto: no %s yet, starting from scratch", last)
    return None


def checkpoint_dir(cfg: DictConfig) -> Path:
    """Where this run's checkpoints go (the model_checkpoint callback's dirpath)."""
    checkpoint_cfg = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    return Path(str(checkpoint_cfg.get("dirpath") or Path(cfg.paths.output_dir) / "checkpoints"))


def build_loggers(cfg: DictConfig, resume_step: int | None = None) -> list[Any]:
    """The configured loggers; when resuming at ``resume_step`` they continue the interrupted run's logs."""
    logger_cfgs = dict(cfg.get("logger") or {})
    overrides = {}
    if resume_step is not None:
        overrides = continue_loggers(logger_cfgs, resume_step, cfg.paths.output_dir)
    loggers = []
    for name, logger_cfg in logger_cfgs.items():
        if logger_cfg is None:
            continue
        logger_cfg = OmegaConf.create(OmegaConf.to_container(logger_cfg, resolve=True))  # open to new keys
        if "WandbLogger" in str(logger_cfg.get("_target_", "")):
            if not os.environ.get("WANDB_API_KEY"):
                # No key: keep everything on disk (wandb sync later). The key itself is never logged.
                logger_cfg = OmegaConf.merge(logger_cfg, {"offline": True})
                log.info("wandb: no WANDB_API_KEY in the environment, logging offline")
            overrides.setdefault(name, {"id": wandb_run_id(cfg.paths.output_dir)})
            if command_line_has_secrets():
                # wandb records the command line in its run metadata; this one holds a credential.
                logger_cfg = OmegaConf.merge(logger_cfg, {"settings": {"_target_": "wandb.Settings", "x_disable_meta": True}})
                log.info("wandb: the command line holds credentials, so run metadata (args, host) is not recorded")
        if name in overrides:
            logger_cfg = OmegaConf.merge(logger_cfg, overrides[name])
        loggers.append(instantiate(logger_cfg))
    return loggers


def command_line_has_secrets() -> bool:
    """True if :func:`redact` would change this process's command line."""
    line = " ".join(sys.argv)
    return redact(line) != line


def build_callbacks(cfg: DictConfig, have_logger: bool) -> list[Any]:
    callbacks = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None:
            continue
        if not have_logger and "LearningRateMonitor" in str(cb_cfg.get("_target_", "")):
            log.info("callbacks.%s: no logger configured, learning-rate monitoring is off", name)
            continue
        callbacks.append(instantiate(cb_cfg))
    return callbacks


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
    loggers = build_loggers(cfg, resume_step)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=build_callbacks(cfg, bool(loggers)),
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )
    if trainer.is_global_zero:
        log.info("config:\n%s", redact(OmegaConf.to_yaml(cfg, resolve=False)))
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


# ---- one run directory and one log under DDP ------------------------------------------------

# Command-line flags that select the config tree: a child rank must compose the same config.
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def process_rank_from_env() -> int:
    """This process's global rank as launchers announce it before any process group exists.

    torchrun sets RANK, SLURM sets SLURM_PROCID, Lightning's own launcher sets LOCAL_RANK and
    NODE_RANK for the processes it starts; a plain ``panns-train`` has none of them (rank 0).
    """
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return int(os.environ.get("LOCAL_RANK", "0") or 0) + int(os.environ.get("NODE_RANK", "0") or 0)


def quiet_non_zero_rank() -> None:
    """On ranks other than 0, drop Hydra's job log file handler: rank 0's log is the run's log.

    Ranks started by torchrun or SLURM compose the same config and would append to the same
    ``<job>.log``; their console output stays.
    """
    if process_rank_from_env() == 0:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def child_rank_command(trainer: L.Trainer) -> Iterator[None]:
    """While ``trainer.fit`` starts the other local ranks, make their command re-run *this* job.

    Lightning builds the child command as ``sys.argv[1:]`` + ``hydra.run.dir=<HydraConfig run.dir>``
    + ``hydra.output_subdir=null``. In a sweep that would be ``-m`` with every job of the sweep and
    the run-mode directory pattern, not this job's directory. So, for the duration of the launch:
    argv holds this job's own overrides plus ``hydra.mode=RUN`` (Optuna presets set MULTIRUN in the
    config) and ``hydra/job_logging=stdout`` (no ``train_ddp_process_N.log``), and Hydra's run.dir
    is this job's output directory.
    """
    from hydra.core.hydra_config import HydraConfig

    launcher = getattr(trainer.strategy, "launcher", None)
    spawns_children = type(launcher).__name__ == "_SubprocessScriptLauncher" and not getattr(
        trainer.strategy.cluster_environment, "creates_processes_externally", True
    )
    if not spawns_children or not HydraConfig.initialized() or process_rank_from_env() != 0:
        yield
        return
    hydra_cfg = HydraConfig.get()
    saved_argv, saved_run_dir = list(sys.argv), hydra_cfg.run.dir
    sys.argv = [saved_argv[0], *config_flags(saved_argv[1:]), *hydra_cfg.overrides.task,
                "hydra.mode=RUN", "hydra/job_logging=stdout"]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = str(hydra_cfg.runtime.output_dir)
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra_cfg.run):
            hydra_cfg.run.dir = saved_run_dir


@contextlib.contextmanager
def distributed_scope() -> Iterator[None]:
    """Leave no process group and no launcher variables behind when the job ends.

    A sweep runs its jobs one after another in this process: Lightning's launcher sets
    LOCAL_RANK, WORLD_SIZE, MASTER_PORT... in ``os.environ`` and the process group outlives the
    child ranks, so without this the next DDP job would think its ranks are started externally
    (and wait for peers forever) or talk to a dead group.
    """
    import torch.distributed as dist

    saved_env = dict(os.environ)
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved_env)


def config_flags(argv: list[str]) -> list[str]:
    """The ``--config-path/--config-name/--config-dir`` flags of ``argv`` (both ``-cn x`` and ``-cn=x``)."""
    kept: list[str] = []
    for i, arg in enumerate(argv):
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            kept += [arg, argv[i + 1]]
        elif arg.split("=", 1)[0] in _CONFIG_FLAGS and "=" in arg:
            kept.append(arg)
    return kept


@hydra.main(version_base="1.3", config_path=find_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    redact_hydra_run()
    try:
        results = train(cfg)
    except (ConfigError, NonFiniteTrainingError, DataErrorBudgetExceeded) as error:
        raise SystemExit(redact(f"panns-train: {error}")) from None
    except Preempted as stop:
        # 128 + SIGTERM: what a job killed by SIGTERM reports; schedulers requeue on it.
        log.warning("panns-train: %s; resume with ckpt_path=auto", stop)
        raise SystemExit(143) from None
    # The value a sweeper optimises: validation mAP.
    return results.get("val/mAP")


if __name__ == "__main__":
    main()
