"""panns-finetune: panns-train's app with a pretrained backbone, a new head and k-fold cross-validation.

One job = one fold: ``data.fold=k`` trains on every other fold of the shard set and tests on fold
k, then writes ``fold_result.json`` (accuracy, confusion counts) into the job's directory. A sweep
over the folds, with the report at the end::

    panns-finetune -m experiment=finetune_esc50 data.fold=1,2,3,4,5 finetune.checkpoint=Cnn14_mAP=0.431.pth

A shard set with a train / val / test split (``panns-prepare folder`` / ``csv``) is one job: each of
``data.train_dir`` / ``val_dir`` / ``test_dir`` reads its split (``data.use_splits``), and the
result goes to the same ``fold_result.json`` (``fold: null``). The task comes from the manifest
(multi-label: BCE, scored by mAP; single-label: cross-entropy, accuracy; ``finetune.multilabel``
overrides it); ``optimized_metric=auto`` selects on that score and
``finetune.test_on=auto`` tests the best checkpoint when validation has clips of its own.

The ``finetune`` keys (schema :class:`~panns_lightning.cli.config_schema.FinetuneConfig`):
``checkpoint`` (null: from scratch), ``mode`` (full | linear_probe | partial), ``freeze_until``,
``layer_decay``, ``backbone_from_checkpoint`` (take the model name and front end from one of our
Lightning checkpoints instead of ``model``), ``test_on`` (``last``: the weights at the end of
training; ``best``: the best validation checkpoint, which selects on the test fold itself when val = test).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, open_dict

from panns_lightning.cli.build import (
    build_datamodule,
    build_finetune_module,
    build_loggers,
    build_trainer,
    finetune_multilabel,
    resolve_ckpt_path,
)
from panns_lightning.cli.config_schema import ConfigError, validate_finetune_config
from panns_lightning.cli.entry import console_entry
from panns_lightning.cli.hydra_app import find_config_dir, run_app
from panns_lightning.cli.preflight import preflight_finetune
from panns_lightning.shardset import ShardSetError
from panns_lightning.training.callbacks import write_json_atomic
from panns_lightning.training.cv_report import RESULT_NAME, fold_result

log = logging.getLogger("panns_lightning.finetune")


def finetune(cfg: DictConfig) -> dict[str, Any]:
    """Fit one fold (or the train split), test it, write ``fold_result.json``; returns the test metrics.

    ``result["score"]`` is the task's headline test figure (``test/mAP`` or ``test/accuracy``).
    """
    cfg = validate_finetune_config(cfg)
    preflight_finetune(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data, cfg.speed)
    try:  # fail before building anything when the fold or a split does not exist in the shard set
        clips = datamodule.check_selection()
    except ShardSetError as error:
        raise ConfigError(str(error)) from None
    multilabel = finetune_multilabel(cfg, datamodule)
    cfg = _resolve_auto(cfg, multilabel, separate_val=datamodule.uses_splits("val"))
    log.info(
        "%s task (%s), clips per split: %s",
        "multi-label" if multilabel else "single-label",
        "BCE, mAP" if multilabel else "cross-entropy, accuracy",
        clips,
    )
    module = build_finetune_module(cfg, datamodule)
    if not cfg.finetune.checkpoint:  # a typo'd or forgotten checkpoint must not pass for fine-tuning
        log.warning(
            "finetune.checkpoint is null: training %s from random weights (finetune.checkpoint=PATH starts from "
            "pretrained ones)",
            module.hparams["model_config"]["name"],
        )
    trainer = build_trainer(cfg, build_loggers(cfg))
    # weights_only=True: a resumed checkpoint is read like every other one (no code runs on load).
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg), weights_only=True)
    results: dict[str, Any] = {}
    if cfg.test and cfg.data.test_dir:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt = best if cfg.finetune.test_on == "best" and best else None
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        results = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        if f"test/{headline_metric(multilabel)}" in results:
            results["score"] = results[f"test/{headline_metric(multilabel)}"]
        if trainer.is_global_zero and module.last_test_predictions is not None:
            _write_fold_result(cfg, trainer, module, datamodule, results, tested_weights=ckpt or "last")
    return results


def headline_metric(multilabel: bool) -> str:
    """The score a task is judged by: mAP for multi-label sets, accuracy for single-label ones."""
    return "mAP" if multilabel else "accuracy"


def _resolve_auto(cfg: DictConfig, multilabel: bool, separate_val: bool) -> DictConfig:
    """``optimized_metric=auto`` → ``val/<headline metric>`` (no val set: best.ckpt is not chosen on
    anything); ``test_on=auto`` → best with a val split, else last."""
    checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint")
    with open_dict(cfg):
        if cfg.optimized_metric == "auto":
            cfg.optimized_metric = f"val/{headline_metric(multilabel)}"
            if checkpoint is not None and not cfg.data.val_dir:
                checkpoint.monitor = None
        if cfg.finetune.test_on == "auto":
            cfg.finetune.test_on = "best" if separate_val else "last"
    return cfg


@console_entry
@hydra.main(version_base="1.3", config_path=find_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_app("panns-finetune", lambda: finetune(cfg)).get("score")


def _write_fold_result(
    cfg: DictConfig, trainer: L.Trainer, module: Any, datamodule: Any, metrics: dict[str, Any], tested_weights: str
) -> None:
    """``fold_result.json`` in the job's directory: what ``panns-cv-report`` summarises over the folds."""
    probs, targets = module.last_test_predictions
    manifest = datamodule.manifest("test")
    payload = fold_result(
        fold=cfg.data.fold,
        label_names=module.label_names,
        probs=probs,
        targets=targets,
        multilabel=module.multilabel,
        metrics=metrics,
        info={
            "num_folds": (manifest.extra.get("folds") or {}).get("num_folds"),
            "dataset": manifest.dataset,
            "test_dir": str(cfg.data.test_dir),
            "checkpoint": cfg.finetune.checkpoint,
            "mode": cfg.finetune.mode,
            "model": cfg.model.name,
            "tested_weights": tested_weights,
            "global_step": trainer.global_step,
            "test_split": "test" if datamodule.uses_splits("test") else None,
            "optimized_metric": cfg.optimized_metric,  # resolved: never "auto" here
        },
    )
    write_json_atomic(Path(cfg.paths.output_dir) / RESULT_NAME, payload)
    tested = f"fold {cfg.data.fold}" if cfg.data.fold is not None else "test"
    metric = headline_metric(module.multilabel)
    log.info("%s: %s %.4f on %d clips", tested, metric, payload[metric], payload["num_clips"])


if __name__ == "__main__":
    main()
