"""Sweeps: a real 2 × 2 multirun with its report, submitit_local, and the SLURM / Optuna presets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from panns_lightning.cli.hydra_app import find_config_dir
from panns_lightning.cli.sweep_report import main as report_main
from panns_lightning.cli.sweep_report import write_sweep_report
from train_fixtures import BIN, demo_overrides, run

FAST = [
    "trainer.max_steps=2",
    "trainer.limit_val_batches=2",
    "test=false",
    "trainer.enable_progress_bar=false",
    "callbacks.lr_monitor=null",
]


@pytest.mark.slow
def test_two_by_two_multirun_and_its_report(tiny_audioset: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run(
        [
            BIN / "panns-train",
            "-m",
            *demo_overrides(tiny_audioset, tmp_path, output_dir=False),
            *FAST,
            f"hydra.sweep.dir={sweep}",
            "augment.mixup.alpha=0.2,1.0",
            "augment.specaugment.enabled=true,false",
        ]
    )
    # One directory per job, each with its own metrics, written by the Hydra callback at the end.
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1", "2", "3"]
    with (sweep / "sweep_summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert list(rows[0])[:4] == ["rank", "job", "augment.mixup.alpha", "augment.specaugment.enabled"]
    assert {(r["augment.mixup.alpha"], r["augment.specaugment.enabled"].lower()) for r in rows} == {
        ("0.2", "true"),
        ("0.2", "false"),
        ("1.0", "true"),
        ("1.0", "false"),
    }
    maps = [float(r["val/mAP"]) for r in rows]
    assert maps == sorted(maps, reverse=True)
    for row in rows:  # each row's score is its own job's metrics.json
        job = json.loads((sweep / row["job"] / "metrics.json").read_text())
        assert abs(job["val"]["mAP"] - float(row["val/mAP"])) < 1e-4
    assert (sweep / "sweep_summary.png").stat().st_size > 10_000
    assert "| augment.mixup.alpha |" in (sweep / "sweep_summary.md").read_text()
    # The console script path: sorted by another metric, written elsewhere.
    report_main([str(sweep), "--metric", "val/loss", "--out", str(tmp_path / "by_loss"), "--no-plot"])
    with (tmp_path / "by_loss" / "sweep_summary.csv").open() as handle:
        losses = [float(r["val/loss"]) for r in csv.DictReader(handle)]
    assert len(losses) == 4 and losses == sorted(losses)  # a loss sorts ascending


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(tiny_audioset: Path, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")
    sweep = tmp_path / "submitit"
    run(
        [
            BIN / "panns-train",
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            *demo_overrides(tiny_audioset, tmp_path, output_dir=False),
            *FAST,
            "logger=none",
            "callbacks.model_checkpoint=null",
            f"hydra.sweep.dir={sweep}",
            "augment.mixup.enabled=true,false",
        ]
    )
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["global_step"] == 2 and metrics["val"]["num_clips"] == 8  # 2 batches of 4
    assert list((sweep / ".submitit").iterdir())  # really went through submitit
    assert len(list(csv.DictReader((sweep / "sweep_summary.csv").open()))) == 2


def test_report_sorts_failed_jobs_last_and_lower_is_better(tmp_path: Path) -> None:
    for job, (alpha, loss) in enumerate([(0.5, 0.3), (1.0, 0.1), (2.0, None)]):
        directory = tmp_path / str(job)
        (directory / ".hydra").mkdir(parents=True)
        (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"augment.mixup.alpha={alpha}", "seed=1"]))
        if loss is not None:
            (directory / "metrics.json").write_text(json.dumps({"global_step": 5, "val": {"loss": loss}}))
    report = write_sweep_report(tmp_path, metric="val/loss", plot=False)
    assert [job.name for job in report.jobs] == ["1", "0", "2"]
    assert report.varying_keys == ["augment.mixup.alpha"] and report.constant_overrides == {"seed": "1"}
    assert "failed or unfinished): 2" in (tmp_path / "sweep_summary.md").read_text()


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_preset_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")
    cfg = _compose(
        ["experiment=demo", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.nodes, launcher.tasks_per_node) == ("gpu", 2, 8)
    assert launcher.additional_parameters.requeue is True and launcher.max_num_timeout > 0


def test_optuna_preset_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install hydra-optuna-sweeper")
    cfg = _compose(["experiment=demo", "hparams_search=augment_optuna"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert "augment.mixup.alpha" in cfg.hydra.sweeper.params


def test_report_sorts_by_the_sweeps_own_optimized_metric(tmp_path: Path) -> None:
    for job, (metric, loss) in enumerate([("val/loss", 0.3), ("auto", 0.1)]):
        directory = tmp_path / str(job)
        (directory / ".hydra").mkdir(parents=True)
        (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={job}"]))
        (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": metric}))
        (directory / "metrics.json").write_text(json.dumps({"val": {"loss": loss}}))
    # panns-finetune's "auto" is what the job resolved it to (fold_result.json).
    (tmp_path / "1" / "fold_result.json").write_text(json.dumps({"optimized_metric": "val/loss"}))
    report = write_sweep_report(tmp_path, plot=False)
    assert report.metric == "val/loss" and [job.name for job in report.jobs] == ["1", "0"]
    assert write_sweep_report(tmp_path, "auto", plot=False).metric == "val/loss"  # the finetune callback's value
    (tmp_path / "1" / "fold_result.json").write_text(json.dumps({"optimized_metric": "val/accuracy"}))
    with pytest.raises(ValueError, match="pass --metric"):
        write_sweep_report(tmp_path, plot=False)
