"""Cross-validation report on fabricated fold results, and one real 2-fold sweep through panns-finetune."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panns_lightning.cli import cv_report as cv_report_cli
from panns_lightning.training.cv_report import CVReportError, fold_result, summarize, write_report

LABELS = ["dog", "rain", "siren"]


def write_fold(directory: Path, fold: int, truth: list[int], predicted: list[int], labels: list[str] = LABELS) -> None:
    probs = torch.eye(len(labels))[predicted] * 0.9 + 0.05
    targets = torch.eye(len(labels))[truth]
    directory.mkdir(parents=True)
    result = fold_result(
        fold=fold, label_names=labels, probs=probs, targets=targets, multilabel=False, info={"num_folds": 3}
    )
    (directory / "fold_result.json").write_text(json.dumps(result))


def test_report_numbers_markdown_and_png(tmp_path: Path) -> None:
    write_fold(tmp_path / "0", 1, [0, 1, 2, 2], [0, 1, 2, 2])  # 1.0
    write_fold(tmp_path / "1", 2, [0, 1, 2, 2], [0, 1, 1, 2])  # 0.75
    write_fold(tmp_path / "2", 3, [0, 0, 1, 2], [1, 0, 1, 0])  # 0.5
    summary = write_report(tmp_path, title="esc50")
    assert [f["fold"] for f in summary["folds"]] == [1, 2, 3]
    assert summary["accuracy_mean"] == pytest.approx(0.75)
    assert summary["accuracy_std"] == pytest.approx(np.std([1.0, 0.75, 0.5], ddof=1))
    assert summary["confusion"] == [[3, 1, 0], [0, 3, 0], [1, 1, 3]]
    assert summary["per_class_accuracy"] == pytest.approx({"dog": 0.75, "rain": 1.0, "siren": 0.6})
    assert summary["missing_folds"] == []
    markdown = (tmp_path / "cv_summary.md").read_text()
    assert "| 2 | 4 | 0.7500 |" in markdown and "**0.7500 ± 0.2500**" in markdown
    assert markdown.index("| siren |") < markdown.index("| dog |") < markdown.index("| rain |")  # weakest first
    assert json.loads((tmp_path / "cv_summary.json").read_text())["num_clips"] == 12
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_refuses_mixed_sweeps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_fold(tmp_path / "a", 1, [0], [0])
    write_fold(tmp_path / "b", 1, [1], [1])
    with pytest.raises(CVReportError, match="fold 1 appears twice"):
        summarize([(p, json.loads(p.read_text())) for p in sorted(tmp_path.rglob("fold_result.json"))])
    write_fold(tmp_path / "other" / "c", 2, [0], [0], labels=["x", "y", "z"])
    assert cv_report_cli.main([str(tmp_path / "other")]) == 0
    assert cv_report_cli.main([str(tmp_path / "empty")]) == 1
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_two_fold_sweep_through_the_app_writes_the_report(tmp_path: Path) -> None:
    from panns_lightning.cli import prepare
    from panns_lightning.datasets.esc50 import write_synthetic_esc50

    raw = write_synthetic_esc50(tmp_path / "raw", num_classes=2, clips_per_class=10, clip_seconds=0.5)
    shards = tmp_path / "shards"
    assert (
        prepare.main(
            [
                "esc50",
                "--root",
                str(raw),
                "--out",
                str(shards),
                "--sample-rate",
                "16000",
                "--clip-seconds",
                "0.5",
                "--workers",
                "0",
                "--min-shards",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "panns_lightning.cli.finetune",
        "-m",
        "experiment=demo_finetune",
        "data.fold=1,3",
        f"data.train_dir={shards}",
        f"data.test_dir={shards}",
        "trainer.max_steps=2",
        "data.batch_size=4",
        "augment.specaugment.time_drop_width=4",
        f"hydra.sweep.dir={sweep}",
        f"paths.root_dir={tmp_path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    results = sorted(sweep.rglob("fold_result.json"))
    assert len(results) == 2
    first = json.loads(results[0].read_text())
    assert first["fold"] == 1 and first["num_clips"] == 4 and first["num_folds"] == 5 and first["mode"] == "full"
    summary = json.loads((sweep / "cv_summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [1, 3] and summary["missing_folds"] == [2, 4, 5]
    assert (sweep / "confusion_matrix.png").is_file() and "mean" in done.stdout
