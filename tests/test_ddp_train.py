"""A 2-process CPU DDP run (gloo) of the demo: one run dir, one log, one checkpoint set, exact metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from panns_lightning.cli.evaluate import evaluate_checkpoint


@pytest.mark.slow
def test_two_process_ddp_writes_once_and_matches_single_process_eval(tiny_audioset: Path, ddp_reference: Path) -> None:
    out = ddp_reference / "run"
    assert "GLOBAL_RANK: 1" in (ddp_reference / "output.txt").read_text()  # the second rank really ran

    # Everything the run wrote is in its one directory, written once.
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        ".hydra/config.yaml",
        ".hydra/hydra.yaml",
        ".hydra/overrides.yaml",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "csv/hparams.yaml",
        "csv/metrics.csv",
        "metrics.json",
        "train.log",
    ]
    assert not (ddp_reference / "outputs").exists()  # the child rank made no run dir of its own
    with (out / "csv" / "metrics.csv").open() as handle:
        val_rows = [row for row in csv.DictReader(handle) if row.get("val/mAP")]
    assert len(val_rows) == 1  # one validation, logged once

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val"]["num_clips"] == 40  # every eval clip exactly once across the two ranks
    scores, _ = evaluate_checkpoint(
        out / "checkpoints" / "best.ckpt", tiny_audioset / "eval", batch_size=4, num_workers=0, accelerator="cpu"
    )
    assert scores.num_clips == 40
    assert scores.mAP == pytest.approx(metrics["val"]["mAP"], abs=1e-6)
    assert scores.AUC == pytest.approx(metrics["val"]["AUC"], abs=1e-6)
