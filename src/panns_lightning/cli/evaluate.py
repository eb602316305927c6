"""panns-eval: a checkpoint + a shard set → metrics JSON + a printed table.

The checkpoint carries its model card (network, front end, label list, task), so nothing else is needed:
``panns-eval ckpt_path=outputs/.../checkpoints/best.ckpt data_dir=data/demo/shards/eval``.
Every clip of the shard set is scored exactly once (also under DDP).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from panns_lightning.cli.config_schema import validate_eval_config
from panns_lightning.cli.entry import console_entry
from panns_lightning.cli.hydra_app import find_config_dir, run_app
from panns_lightning.cli.preflight import preflight_eval
from panns_lightning.redact import redact
from panns_lightning.training.callbacks import scores_to_json, write_json_atomic
from panns_lightning.training.metrics import TaggingScores, format_scores_table

log = logging.getLogger("panns_lightning.eval")


def evaluate_checkpoint(
    ckpt_path: str | Path,
    data_dir: str | Path,
    batch_size: int = 32,
    num_workers: int = 2,
    accelerator: str = "auto",
    devices: int | str = 1,
) -> tuple[TaggingScores, list[str]]:
    """Score a model file on every clip of a shard set.

    The file is read by the one reader (:mod:`panns_lightning.models.reader`), so any torch file
    with a model card works: a panns-train / panns-finetune ``.ckpt`` or a ``panns-export --format
    panns`` ``.pth``. Its card gives the network, the labels (which must be the shard set's) and
    the task.
    """
    from panns_lightning.data import AudioShardDataModule
    from panns_lightning.models.reader import load_model
    from panns_lightning.training.module import TaggingModule

    try:
        loaded = load_model(ckpt_path)
    except (OSError, ValueError, RuntimeError) as error:
        # Unsafe pickle, missing file, foreign or mismatched checkpoint: one line naming the file.
        raise SystemExit(
            redact(f"panns-eval: cannot load checkpoint {ckpt_path}: {' '.join(str(error).split())}")
        ) from None
    if loaded.network is None:
        raise SystemExit(
            f"panns-eval: {ckpt_path} is an exported {loaded.kind} graph; score the .ckpt or .pth it came from"
        )
    card = loaded.card
    module = TaggingModule(
        {"name": card.model, **card.frontend, **card.options},
        [{"index": index, "name": name} for index, name in enumerate(card.labels)],
        multilabel=card.multilabel,
        network=loaded.network,
    )
    datamodule = AudioShardDataModule(
        train_dir=None, val_dir=None, test_dir=str(data_dir), batch_size=batch_size, num_workers=num_workers
    )
    if int(datamodule.sample_rate) != card.sample_rate:
        raise SystemExit(
            f"panns-eval: {ckpt_path} was trained at {card.sample_rate} Hz but {data_dir} holds "
            f"{datamodule.sample_rate} Hz shards"
        )
    checkpoint_names = module.label_names
    data_names = list(datamodule.label_names)
    if checkpoint_names != data_names:
        raise SystemExit(
            f"panns-eval: the label list of {ckpt_path} ({len(checkpoint_names)} classes) differs from "
            f"{data_dir}/manifest.json ({len(data_names)} classes)"
        )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert module.last_test_scores is not None
    return module.last_test_scores, checkpoint_names


def evaluate(cfg: DictConfig) -> TaggingScores:
    """Score ``cfg.ckpt_path`` on ``cfg.data_dir``; writes ``cfg.output_json`` and prints the table."""
    cfg = validate_eval_config(cfg)
    preflight_eval(cfg)
    scores, names = evaluate_checkpoint(
        cfg.ckpt_path, cfg.data_dir, cfg.batch_size, cfg.num_workers, cfg.accelerator, cfg.devices
    )
    payload: dict[str, Any] = {
        "checkpoint": str(cfg.ckpt_path),
        "data_dir": str(cfg.data_dir),
        **(scores_to_json(scores, names) or {}),
    }
    out = Path(cfg.output_json)
    write_json_atomic(out, payload)
    print(f"\nEvaluation of {cfg.ckpt_path}\non {cfg.data_dir}\n")
    print(format_scores_table(scores, names))
    print(f"\nmetrics written to {out}")
    return scores


@console_entry
@hydra.main(version_base="1.3", config_path=find_config_dir(), config_name="eval")
def main(cfg: DictConfig) -> float:
    return run_app("panns-eval", lambda: evaluate(cfg)).mAP


if __name__ == "__main__":
    main()
