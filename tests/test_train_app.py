"""The training and evaluation apps end to end, on a tiny synthetic AudioSet made by the real path.

synthetic generator (AudioSet layout) → panns-prepare audioset → shards → panns-train → checkpoint
→ panns-eval. Models are run at 16 kHz on 1 s clips with few steps so the whole file stays fast.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from panns_lightning.cli.config_schema import ConfigError, validate_train_config
from panns_lightning.cli.hydra_app import find_config_dir
from train_fixtures import BIN, REPO, demo_overrides, run

# tiny_audioset: the session fixture in conftest.py.


@pytest.mark.slow
def test_train_then_eval_console_scripts(tiny_audioset: Path, tmp_path: Path) -> None:
    """panns-train writes a best checkpoint; panns-eval on it reproduces the validation mAP."""
    out = tmp_path / "run"
    trained = run(
        [
            BIN / "panns-train",
            *demo_overrides(tiny_audioset, out),
            "trainer.max_steps=4",
            "test=true",
            f"hydra.run.dir={out}",
        ]
    )
    console = trained.stdout + trained.stderr
    # Known-harmless library lines are filtered in one place (cli/library_noise.py); nothing says "Epoch 0/-2".
    for noise in ("LeafSpec", "litlogger", "`weights_only` was not set", "srun", "/-2"):
        assert noise not in console, noise
    best = out / "checkpoints" / "best.ckpt"
    assert best.is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 4
    assert metrics["test"]["num_clips"] == 40  # every eval clip scored exactly once

    # The checkpoint alone is enough: it carries the model config and the label names.
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["model_config"]["name"] == "Cnn6"
    assert len(checkpoint["hyper_parameters"]["labels"]) == 6

    eval_out = tmp_path / "eval"
    result = run(
        [
            BIN / "panns-eval",
            f"ckpt_path={best}",
            f"data_dir={tiny_audioset / 'eval'}",
            "num_workers=0",
            f"hydra.run.dir={eval_out}",
            f"paths.root_dir={eval_out}",
        ]
    )
    assert "mAP" in result.stdout and "d-prime" in result.stdout
    evaluated = json.loads((eval_out / "eval_metrics.json").read_text())
    assert evaluated["num_clips"] == 40
    # best.ckpt is the test checkpoint of the training run: the same weights on the same clips.
    assert evaluated["mAP"] == pytest.approx(metrics["test"]["mAP"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["Cnn14", "Wavegram_Logmel_Cnn14"])
def test_fast_dev_run_large_models(tiny_audioset: Path, tmp_path: Path, model: str) -> None:
    from panns_lightning.cli.train import train

    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=demo_overrides(tiny_audioset, tmp_path, model)
            + [
                "trainer.fast_dev_run=1",
                "data.batch_size=2",
                "logger=none",
                "callbacks.model_checkpoint=null",
                "test=false",
            ],
        )
    results = train(cfg)
    assert torch.isfinite(torch.tensor(results["train/loss"]))


def test_typo_in_yaml_is_named(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo"])
    with open_dict(cfg):
        cfg.data.batch_sizee = 3
    with pytest.raises(ConfigError, match=r"data\.batch_sizee"):
        validate_train_config(cfg)


def test_wrong_type_is_named() -> None:
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo"])
    cfg.data.batch_size = "many"
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        validate_train_config(cfg)


@pytest.mark.slow
def test_cli_typo_and_unknown_model_fail_before_work(tiny_audioset: Path, tmp_path: Path) -> None:
    typo = subprocess.run(
        [str(BIN / "panns-train"), "experiment=demo", "data.batch_sizee=3"], capture_output=True, text=True, cwd=REPO
    )
    assert typo.returncode != 0 and "batch_sizee" in typo.stderr
    unknown = subprocess.run(
        [
            str(BIN / "panns-train"),
            *demo_overrides(tiny_audioset, tmp_path),
            "model.name=Cnn99",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert unknown.returncode != 0
    assert "Cnn99" in unknown.stderr and "Cnn14" in unknown.stderr  # names it and lists valid ones


@pytest.mark.slow
def test_sample_rate_mismatch_is_explained(tiny_audioset: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "panns-train"),
            *demo_overrides(tiny_audioset, tmp_path),
            "model.sample_rate=32000",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert "model.sample_rate=32000" in result.stderr and "16000 Hz" in result.stderr


def test_ckpt_path_auto_resumes_only_when_last_exists(tmp_path: Path) -> None:
    from panns_lightning.cli.build import resolve_ckpt_path

    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=demo",
                "ckpt_path=auto",
                f"paths.root_dir={tmp_path}",
                f"paths.output_dir={tmp_path}",
            ],
        )
    cfg = validate_train_config(cfg)
    assert resolve_ckpt_path(cfg) is None  # a fresh run starts from scratch
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resolve_ckpt_path(cfg) == str(last)  # a requeued run resumes
    cfg.ckpt_path = "/some/explicit.ckpt"
    assert resolve_ckpt_path(cfg) == "/some/explicit.ckpt"


def test_sweep_dir_resolves_before_any_job_starts() -> None:
    """A multirun resolves hydra.sweep.dir before HydraConfig exists: no ${hydra:...} may feed it."""
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo"], return_hydra_config=True)
    assert str(cfg.hydra.sweep.dir).startswith("./outputs/demo/multiruns/")


@pytest.mark.slow
def test_debug_overfit_replays_one_batch_and_the_loss_falls(tiny_audioset: Path, tmp_path: Path) -> None:
    """debug=overfit: the same clips every step (the stream stays at epoch 0), no augmentation."""
    import csv

    out = tmp_path / "run"
    keys = tmp_path / "keys.txt"
    run(
        [
            BIN / "panns-train",
            *demo_overrides(tiny_audioset, out),
            "debug=overfit",
            "data.steps_per_epoch=1",
            "data.batch_size=8",
            "trainer.max_epochs=30",
            f"hydra.run.dir={out}",
            "+callbacks.key_log._target_=panns_lightning.training.callbacks.TrainKeyLog",
            f"+callbacks.key_log.path={keys}",
        ]
    )
    batches = {line.split()[3] for line in keys.read_text().splitlines()}
    assert len(batches) == 1 and len(keys.read_text().splitlines()) == 30
    with open(out / "csv" / "metrics.csv", newline="") as handle:
        losses = [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert len(losses) == 30 and losses[-1] < 0.2 * losses[0]


def test_a_shard_set_without_the_asked_split_is_one_line_not_a_traceback(monkeypatch) -> None:
    from panns_lightning.cli import hydra_app
    from panns_lightning.shardset import ShardSetError

    monkeypatch.setattr(hydra_app, "redact_hydra_run", lambda: None)

    def work() -> None:
        raise ShardSetError("data/x/manifest.json has no 'val' split")

    with pytest.raises(SystemExit, match=r"^panns-train: data/x/manifest.json has no 'val' split$"):
        hydra_app.run_app("panns-train", work)
