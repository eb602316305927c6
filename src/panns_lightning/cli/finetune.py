"""panns-finetune: panns-train's app with a pretrained backbone, a new head and k-fold cross-validation.

One job = one fold: ``data.fold=k`` trains on every other fold of the shard set and tests on fold
k, then writes ``fold_result.json`` (accuracy, confusion counts) into the job's directory. A sweep
over the folds, with the report at the end::

    panns-finetune -m experiment=finetune_esc50 data.fold=1,2,3,4,5 finetune.checkpoint=Cnn14_mAP=0.431.pth

The ``finetune`` keys (schema :class:`FinetuneConfig`): ``checkpoint`` (null: from scratch),
``mode`` (full | linear_probe | partial), ``freeze_until``, ``layer_decay``,
``backbone_from_checkpoint`` (take the model name and front end from one of our Lightning
checkpoints instead of ``model``), ``test_on`` (``last``: the weights at the end of training;
``best``: the best validation checkpoint, which selects on the test fold itself when val = test).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from panns_lightning.cli.config_schema import ConfigError, DataConfig, TrainConfig, validate_train_config
from panns_lightning.cli.hydra_app import find_config_dir
from panns_lightning.cli.preflight import preflight_finetune
from panns_lightning.cli.hydra_app import redact_hydra_run
from panns_lightning.redact import redact

log = logging.getLogger("panns_lightning.finetune")

FRONTEND_KEYS = ("name", "sample_rate", "window_size", "hop_size", "mel_bins", "fmin", "fmax")


@dataclass
class FinetuneConfig:
    checkpoint: Optional[str] = None
    mode: str = "full"
    freeze_until: Optional[str] = None
    layer_decay: float = 1.0
    # The new head reads the embedding after the backbone's last dropout (p = 0.5), as upstream's
    # transfer models; false: the undropped activations, as the AudioSet tagger.
    head_on_dropped_embedding: bool = True
    backbone_from_checkpoint: bool = True
    test_on: str = "last"


@dataclass
class FoldDataConfig(DataConfig):
    # Cross-validation: train on every fold but this one, val/test on it (null: the whole set).
    fold: Optional[int] = None


@dataclass
class FinetuneTrainConfig(TrainConfig):
    data: FoldDataConfig = field(default_factory=FoldDataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def validate_finetune_config(cfg: DictConfig) -> DictConfig:
    """panns-train's schema (and its value checks) plus ``finetune`` and ``data.fold``; errors name the key."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    finetune = raw.pop("finetune", None) or {}
    fold = (raw.get("data") or {}).pop("fold", None)
    base = validate_train_config(OmegaConf.create(raw))
    try:
        plain = OmegaConf.to_container(base, resolve=False)
        merged = OmegaConf.merge(OmegaConf.structured(FinetuneTrainConfig), plain, {"finetune": finetune, "data": {"fold": fold}})
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        raise ConfigError(f"invalid config key '{key}': {str(error).splitlines()[0]}") from None
    if merged.finetune.test_on not in ("last", "best"):
        raise ConfigError(f"finetune.test_on must be 'last' or 'best', got {merged.finetune.test_on!r}")
    return merged  # type: ignore[return-value]


def build_finetune_module(cfg: DictConfig, datamodule: Any) -> Any:
    """FineTuneModule with every TaggingModule option panns-train would pass, plus the finetune keys.

    The TaggingModule options come from ``cli.train.build_module`` (one place decides them, and its
    model/data sample-rate check runs here too).
    """
    from panns_lightning.cli.train import build_module
    from panns_lightning.training.checkpoints import checkpoint_model_config
    from panns_lightning.training.finetune import FineTuneModule

    finetune = cfg.finetune
    if finetune.checkpoint and not Path(finetune.checkpoint).is_file():
        raise ConfigError(f"finetune.checkpoint={finetune.checkpoint} not found")
    if finetune.checkpoint and finetune.backbone_from_checkpoint:
        carried = checkpoint_model_config(finetune.checkpoint)
        if carried is not None:
            overrides = {key: carried[key] for key in FRONTEND_KEYS if key in carried}
            changed = {k: v for k, v in overrides.items() if cfg.model.get(k) != v}
            if changed:
                log.info("finetune: model name and front end from %s: %s", finetune.checkpoint, changed)
            cfg = cfg.copy()
            with _writable(cfg):
                cfg.model = OmegaConf.merge(cfg.model, overrides)
    base = build_module(cfg, datamodule)
    options = dict(base.hparams)
    options.pop("multilabel", None)
    extra = {"speed": base.speed}
    return FineTuneModule(
        multilabel=bool(datamodule.multilabel),
        checkpoint=finetune.checkpoint,
        mode=finetune.mode,
        freeze_until=finetune.freeze_until,
        layer_decay=float(finetune.layer_decay),
        head_on_dropped_embedding=bool(finetune.head_on_dropped_embedding),
        **options,
        **extra,
    )


def finetune(cfg: DictConfig) -> dict[str, Any]:
    """Fit one fold, test it, write ``fold_result.json``; returns the test metrics."""
    from panns_lightning.cli.train import build_callbacks, build_datamodule, build_loggers, resolve_ckpt_path
    from panns_lightning.training.callbacks import write_json_atomic
    from panns_lightning.training.fault_tolerance import AtomicCheckpointIO
    from panns_lightning.training.cv_report import RESULT_NAME, fold_result

    cfg = validate_finetune_config(cfg)
    preflight_finetune(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data, cfg.speed)
    if cfg.data.fold is not None:
        # Fail before building anything when the fold does not exist in the shard set.
        from panns_lightning.shardset.folds import fold_selection

        try:
            fold_selection(datamodule.manifest("train" if cfg.data.train_dir else "test"), int(cfg.data.fold), held_out=True)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    module = build_finetune_module(cfg, datamodule)
    loggers = build_loggers(cfg)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=build_callbacks(cfg, bool(loggers)), logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    if trainer.is_global_zero:
        log.info("config:\n%s", redact(OmegaConf.to_yaml(cfg, resolve=False)))
    # weights_only=True: a resumed checkpoint is read like every other one (no code runs on load).
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg), weights_only=True)
    results: dict[str, Any] = {}
    if cfg.test and cfg.data.test_dir:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt = best if cfg.finetune.test_on == "best" and best else None
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        results = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        if trainer.is_global_zero and module.last_test_predictions is not None:
            probs, targets = module.last_test_predictions
            manifest = datamodule.manifest("test")
            payload = fold_result(
                fold=cfg.data.fold,
                label_names=module.label_names,
                probs=probs,
                targets=targets,
                multilabel=module.multilabel,
                metrics=results,
                info={
                    "num_folds": (manifest.extra.get("folds") or {}).get("num_folds"),
                    "dataset": manifest.dataset,
                    "test_dir": str(cfg.data.test_dir),
                    "checkpoint": cfg.finetune.checkpoint,
                    "mode": cfg.finetune.mode,
                    "model": cfg.model.name,
                    "tested_weights": ckpt or "last",
                    "global_step": trainer.global_step,
                },
            )
            write_json_atomic(Path(cfg.paths.output_dir) / RESULT_NAME, payload)
            log.info("fold %s: accuracy %.4f on %d clips", cfg.data.fold, payload["accuracy"], payload["num_clips"])
    return results


@hydra.main(version_base="1.3", config_path=find_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from panns_lightning.data.datamodule import DataErrorBudgetExceeded
    from panns_lightning.models.checkpoint import CheckpointMismatchError
    from panns_lightning.training.numerics import NonFiniteTrainingError

    redact_hydra_run()  # no secret stays in .hydra/*.yaml or reaches the job's log
    try:
        results = finetune(cfg)
    except (ConfigError, CheckpointMismatchError, NonFiniteTrainingError, DataErrorBudgetExceeded) as error:
        # Config, path, unsafe-pickle and backbone-mismatch errors: one line naming the key or file.
        raise SystemExit(redact(f"panns-finetune: {' '.join(str(error).split())}")) from None
    return results.get("test/accuracy")


class _writable:
    """Temporarily lift OmegaConf's struct/readonly flags on a config."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def __enter__(self) -> DictConfig:
        self.struct = OmegaConf.is_struct(self.cfg)
        OmegaConf.set_struct(self.cfg, False)
        return self.cfg

    def __exit__(self, *exc: Any) -> None:
        OmegaConf.set_struct(self.cfg, self.struct)


if __name__ == "__main__":
    main()
