"""A validated config → the objects a run needs: DataModule, LightningModule, loggers, callbacks, Trainer.

The apps (``cli/train.py``, ``cli/finetune.py``) compose a config, build from it here and run.
What each object does lives in the library (``data/``, ``training/``); this module only reads
config groups and hands their values over: ``data`` → :class:`AudioShardDataModule`, ``model`` +
``augment`` + ``optim`` + ``speed`` → :class:`TaggingModule` / :class:`FineTuneModule`, the
``_target_`` groups (``logger``, ``callbacks``, ``trainer``) → ``hydra.utils.instantiate``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from panns_lightning.cli.config_schema import DEFAULT_DDP_TIMEOUT_S, ConfigError, check_ddp_timeout, speed_options
from panns_lightning.cli.ddp import ddp_strategy
from panns_lightning.cli.hydra_app import native_bf16_flag
from panns_lightning.redact import redact
from panns_lightning.training.fault_tolerance import LAST_CHECKPOINT, AtomicCheckpointIO, continue_loggers, wandb_run_id
from panns_lightning.training.progress import step_progress_bar

log = logging.getLogger("panns_lightning.build")


def build_datamodule(data: DictConfig, speed: DictConfig | None = None) -> Any:
    """The ``data`` group as an AudioShardDataModule; ``speed`` adds its data-path levers (int16 batches, pinned memory)."""
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
    """TaggingModule from ``model``, ``augment``, ``optim`` and ``speed``, for the DataModule's labels and rate."""
    from panns_lightning.training.augment import AugmentOptions
    from panns_lightning.training.module import TaggingModule

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
    try:
        speed = speed_options(cfg.speed)
    except ValueError as error:  # its messages name the speed.* keys
        raise ConfigError(str(error)) from None
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    assert isinstance(optim, dict)
    return TaggingModule(
        model_config=model_config,
        labels=list(datamodule.labels),
        multilabel=bool(datamodule.multilabel),
        augment=AugmentOptions.from_dict(OmegaConf.to_container(cfg.augment, resolve=True)).to_dict(),
        speed=speed,
        betas=tuple(optim.pop("betas")),
        **optim,
    )


def build_finetune_module(cfg: DictConfig, datamodule: Any, explicit_model_keys: set[str] | None = None) -> Any:
    """FineTuneModule with every TaggingModule option panns-train would pass, plus the ``finetune`` keys.

    The TaggingModule options come from :func:`build_module` (one place decides them, and its
    model/data sample-rate check runs here too). With ``finetune.backbone_from_checkpoint`` the
    model name and front end come from the checkpoint's model card (:func:`model_from_card`).
    ``explicit_model_keys``: the ``model`` keys given on the command line (default: Hydra's overrides).
    """
    from panns_lightning.training.finetune import FineTuneModule

    finetune = cfg.finetune
    if finetune.checkpoint and not Path(finetune.checkpoint).is_file():
        raise ConfigError(f"finetune.checkpoint={finetune.checkpoint} not found")
    if finetune.checkpoint and finetune.backbone_from_checkpoint:
        explicit = command_line_model_keys() if explicit_model_keys is None else explicit_model_keys
        cfg = model_from_card(cfg, explicit)
    base = build_module(cfg, datamodule)
    options = dict(base.hparams)
    options.pop("multilabel", None)
    return FineTuneModule(
        multilabel=finetune_multilabel(cfg, datamodule),
        checkpoint=finetune.checkpoint,
        mode=finetune.mode,
        freeze_until=finetune.freeze_until,
        layer_decay=float(finetune.layer_decay),
        head_on_dropped_embedding=bool(finetune.head_on_dropped_embedding),
        speed=base.speed,
        **options,
    )


def model_from_card(cfg: DictConfig, explicit: set[str]) -> DictConfig:
    """``cfg`` with ``model.name`` and the front end of ``finetune.checkpoint``'s model card.

    A value the recipe set (an experiment's or a model group's default) gives way to the card, said
    on the log; a value given on the command line (``explicit``) that contradicts the card is a
    :class:`ConfigError` naming both, never silently replaced. A published file without a card
    leaves ``model`` as configured (its weights are then checked against it key by key).
    """
    from panns_lightning.models.reader import read_card

    try:
        card = read_card(cfg.finetune.checkpoint)
    except (OSError, ValueError, RuntimeError) as error:
        raise ConfigError(f"finetune.checkpoint: {' '.join(str(error).split())}") from None
    if card is None:
        return cfg
    recorded = {"name": card.model, **card.frontend}
    contradicted = [key for key, value in recorded.items() if key in explicit and cfg.model.get(key) != value]
    if contradicted:
        given = ", ".join(f"model.{key}={cfg.model.get(key)}" for key in contradicted)
        says = ", ".join(f"{key}={recorded[key]}" for key in contradicted)
        raise ConfigError(
            f"{given} was given, but finetune.checkpoint={cfg.finetune.checkpoint} holds a model whose card says "
            f"{says}; drop the override (the card's value is used) or fine-tune another checkpoint"
        )
    changed = {key: value for key, value in recorded.items() if cfg.model.get(key) != value}
    if not changed:
        return cfg
    log.info("finetune: model name and front end from %s's model card: %s", cfg.finetune.checkpoint, changed)
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model = OmegaConf.merge(cfg.model, changed)
    return cfg


def command_line_model_keys() -> set[str]:
    """The ``model`` keys this run's command line sets: ``model=X`` names ``name``, ``model.K=V`` names ``K``."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    keys = set()
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "model":
            keys.add("name")
        elif key.startswith("model."):
            keys.add(key[len("model.") :])
    return keys


def finetune_multilabel(cfg: DictConfig, datamodule: Any) -> bool:
    """The fine-tuning task: the manifest's (``multilabel``), unless ``finetune.multilabel`` overrides it.

    Multi-label trains with BCE and is scored by mAP; single-label with cross-entropy and accuracy.
    Single-label training on clips with several labels is refused: softmax cannot learn them.
    """
    override = cfg.finetune.get("multilabel")
    if override is None:
        return bool(datamodule.multilabel)
    if not override and datamodule.multilabel:
        raise ConfigError(
            f"finetune.multilabel=false but {cfg.data.train_dir} is multi-label (its manifest says clips carry several "
            "labels): single-label training (softmax cross-entropy) cannot learn them; leave finetune.multilabel=null"
        )
    return bool(override)


def build_trainer(cfg: DictConfig, loggers: list[Any]) -> L.Trainer:
    """The ``trainer`` group with the configured callbacks and loggers (checkpoints written atomically); logs the config on rank 0."""
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(trainer_cfg, dict)
    # Ours, not a Trainer argument: the DDP process group's timeout (cli/ddp.py).
    timeout_s = check_ddp_timeout(trainer_cfg.pop("ddp_timeout_s", DEFAULT_DDP_TIMEOUT_S))
    strategy = ddp_strategy(trainer_cfg.pop("strategy", "auto"), timeout_s)
    callbacks = build_callbacks(cfg, bool(loggers))
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(step_progress_bar())  # "Epoch 2/3", not Lightning's "Epoch 1/-2" for an endless stream
    trainer: L.Trainer = instantiate(
        trainer_cfg,
        strategy=strategy,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )
    if trainer.is_global_zero:
        log.info("config:\n%s", redact(OmegaConf.to_yaml(cfg, resolve=False)))
        log_cpu_precision(cfg)
    return trainer


def log_cpu_precision(cfg: DictConfig) -> None:
    """Say which precision ``${cpu_precision:}`` chose, and why (it depends on the CPU)."""
    raw = OmegaConf.to_container(cfg.trainer, resolve=False)
    if isinstance(raw, dict) and "cpu_precision" in str(raw.get("precision")):
        flag = native_bf16_flag()
        reason = (
            f"this CPU has native bf16 ({flag})" if flag else "this CPU has no native bf16 (avx512_bf16 / amx_bf16)"
        )
        log.info("trainer.precision=%s: %s", cfg.trainer.precision, reason)


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
        logger_cfg = OmegaConf.to_container(logger_cfg, resolve=True)  # plain values: the run's paths resolved
        if "WandbLogger" in str(logger_cfg.get("_target_", "")):
            if not os.environ.get("WANDB_API_KEY"):
                # No key: keep everything on disk (wandb sync later). The key itself is never logged.
                logger_cfg = OmegaConf.merge(logger_cfg, {"offline": True})
                log.info("wandb: no WANDB_API_KEY in the environment, logging offline")
            overrides.setdefault(name, {"id": wandb_run_id(cfg.paths.output_dir)})
            if command_line_has_secrets():
                # wandb records the command line in its run metadata; this one holds a credential.
                logger_cfg = OmegaConf.merge(
                    logger_cfg, {"settings": {"_target_": "wandb.Settings", "x_disable_meta": True}}
                )
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
    """The ``callbacks`` group; learning-rate monitoring only when there is a logger to monitor into."""
    callbacks = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None:
            continue
        if not have_logger and "LearningRateMonitor" in str(cb_cfg.get("_target_", "")):
            log.info("callbacks.%s: no logger configured, learning-rate monitoring is off", name)
            continue
        callbacks.append(instantiate(cb_cfg))
    return callbacks


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
