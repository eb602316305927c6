"""panns-train: compose the config → data, module, callbacks, loggers → fit → test.

No training logic lives here; see ``training/module.py`` and ``data/datamodule.py``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from panns_lightning.cli.config_schema import ConfigError, validate_train_config
from panns_lightning.cli.hydra_app import find_config_dir

log = logging.getLogger("panns_lightning.train")


def build_datamodule(data: DictConfig) -> Any:
    from panns_lightning.data import AudioShardDataModule

    kwargs = OmegaConf.to_container(data, resolve=True)
    assert isinstance(kwargs, dict)
    crop_seconds = kwargs.pop("train_crop_seconds")
    datamodule = AudioShardDataModule(**kwargs)
    if crop_seconds is not None:
        datamodule.train_crop_samples = int(round(crop_seconds * datamodule.sample_rate))
    return datamodule


def build_module(cfg: DictConfig, datamodule: Any) -> Any:
    from panns_lightning.training.module import TaggingModule

    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model_config, dict)
    if int(model_config["sample_rate"]) != int(datamodule.sample_rate):
        raise ConfigError(
            f"model.sample_rate={model_config['sample_rate']} but the shards in {cfg.data.train_dir} "
            f"are at {datamodule.sample_rate} Hz: convert the data at the model's rate or pick a model "
            "whose front end matches"
        )
    spec = cfg.augment.specaugment
    # SpecAugment lives in the model's front end (train mode only); "off" is zero stripes.
    model_config["time_drop_width"] = int(spec.time_drop_width)
    model_config["time_stripes_num"] = int(spec.time_stripes_num) if spec.enabled else 0
    model_config["freq_drop_width"] = int(spec.freq_drop_width)
    model_config["freq_stripes_num"] = int(spec.freq_stripes_num) if spec.enabled else 0
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    assert isinstance(optim, dict)
    return TaggingModule(
        model_config=model_config,
        labels=list(datamodule.labels),
        multilabel=bool(datamodule.multilabel),
        mixup_enabled=bool(cfg.augment.mixup.enabled),
        mixup_alpha=float(cfg.augment.mixup.alpha),
        betas=tuple(optim.pop("betas")),
        **optim,
    )


def build_loggers(cfg: DictConfig) -> list[Any]:
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if "WandbLogger" in str(logger_cfg.get("_target_", "")) and not os.environ.get("WANDB_API_KEY"):
            # No key: keep everything on disk (wandb sync later). The key itself is never logged.
            logger_cfg = OmegaConf.merge(logger_cfg, {"offline": True})
            log.info("wandb: no WANDB_API_KEY in the environment, logging offline")
        loggers.append(instantiate(logger_cfg))
    return loggers


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
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule)
    loggers = build_loggers(cfg)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=build_callbacks(cfg, bool(loggers)), logger=loggers or False
    )
    if trainer.is_global_zero:
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=False))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    results: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if cfg.test and cfg.data.test_dir:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        results.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    return results


@hydra.main(version_base="1.3", config_path=find_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        results = train(cfg)
    except ConfigError as error:
        raise SystemExit(f"panns-train: {error}") from None
    # The value a sweeper optimises: validation mAP.
    return results.get("val/mAP")


if __name__ == "__main__":
    main()
