"""Config and environment errors of panns-train / panns-eval / panns-finetune: one line naming the
key and path or value, raised before any model is built or data is read."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from panns_lightning.cli import preflight
from panns_lightning.cli.config_schema import (
    ConfigError,
    validate_eval_config,
    validate_finetune_config,
    validate_train_config,
)
from panns_lightning.cli.hydra_app import find_config_dir
from panns_lightning.cli.preflight import preflight_eval, preflight_finetune, preflight_train
from train_fixtures import BIN, REPO


def shard_dir(folder: Path) -> Path:
    """Enough of a shard set for the preflight: a directory holding manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"format_version": 1}))
    return folder


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    return shard_dir(tmp_path / "shards")


def train_config(shards: Path, *overrides: str, config: str = "train", experiment: str = "demo") -> DictConfig:
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        return compose(
            config,
            overrides=[
                f"experiment={experiment}",
                f"data.train_dir={shards}",
                f"data.val_dir={shards}",
                f"data.test_dir={shards}",
                *overrides,
            ],
        )


def train_error(cfg: DictConfig) -> str:
    with pytest.raises(ConfigError) as error:
        preflight_train(validate_train_config(cfg))
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """Pretend this machine has ``n`` CUDA GPUs."""

    def set_count(count: int) -> None:
        monkeypatch.setattr(preflight, "cuda_device_count", lambda: count)

    return set_count


def test_a_good_config_passes(shards: Path) -> None:
    preflight_train(validate_train_config(train_config(shards, "data.val_dir=null", "ckpt_path=auto")))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_missing_shard_dir_is_named(shards: Path, tmp_path: Path, split: str) -> None:
    missing = tmp_path / "nowhere" / split
    message = train_error(train_config(shards, f"data.{split}_dir={missing}"))
    assert message.startswith(f"data.{split}_dir={missing} does not exist")


def test_shard_dir_without_manifest_or_not_a_directory(shards: Path, tmp_path: Path) -> None:
    empty = tmp_path / "half_converted"
    empty.mkdir()
    assert train_error(train_config(shards, f"data.train_dir={empty}")).startswith(
        f"data.train_dir={empty} has no manifest.json"
    )
    a_file = shards / "manifest.json"
    assert train_error(train_config(shards, f"data.val_dir={a_file}")) == (
        f"data.val_dir={a_file} is not a directory (expected a shard set directory holding manifest.json)"
    )


def test_ckpt_path_must_exist_and_be_a_training_checkpoint(shards: Path, tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "last.ckpt"
    assert train_error(train_config(shards, f"ckpt_path={missing}")) == f"ckpt_path={missing} does not exist"
    assert (
        train_error(train_config(shards, f"ckpt_path={tmp_path}"))
        == f"ckpt_path={tmp_path} is a directory, not a checkpoint file"
    )
    published = tmp_path / "Cnn6.pth"
    torch.save({"model": {"fc1.weight": torch.zeros(2, 2)}}, published)
    assert train_error(train_config(shards, f"ckpt_path={published}")).startswith(
        f"ckpt_path={published} is not a Lightning training checkpoint"
    )
    resumable = tmp_path / "resume.ckpt"
    torch.save({"state_dict": {}, "global_step": 3}, resumable)
    preflight_train(validate_train_config(train_config(shards, f"ckpt_path={resumable}")))


def test_gpu_accelerator_without_cuda(shards: Path, gpus) -> None:
    gpus(0)
    assert train_error(train_config(shards, "trainer=gpu")) == (
        "trainer.accelerator=gpu but this machine has no CUDA GPU (torch.cuda.is_available() is False); "
        "use trainer.accelerator=cpu"
    )


@pytest.mark.parametrize(
    "devices, expected",
    [
        ("4", "trainer.devices=4 but only 2 CUDA GPUs are visible on this machine"),
        ("'0,3'", "trainer.devices=0,3 names GPU 3, but only GPUs 0..1 are visible on this machine"),
        ("[0,2]", "trainer.devices=[0, 2] names GPU 2, but only GPUs 0..1 are visible on this machine"),
        ("many", "trainer.devices='many' is not a GPU count (>= 1), a list of GPU indices, -1 or 'auto'"),
        ("0", "trainer.devices=0 is not a GPU count (>= 1), a list of GPU indices, -1 or 'auto'"),
    ],
)
def test_more_gpus_than_present_are_named(shards: Path, gpus, devices: str, expected: str) -> None:
    gpus(2)
    assert train_error(train_config(shards, "trainer=gpu", f"trainer.devices={devices}")) == expected


@pytest.mark.parametrize("devices", ["2", "-1", "auto", "'0,1'", "[1]"])
def test_gpus_that_exist_pass(shards: Path, gpus, devices: str) -> None:
    gpus(2)
    preflight_train(validate_train_config(train_config(shards, "trainer=ddp", f"trainer.devices={devices}")))


def test_cpu_runs_do_not_look_for_gpus(shards: Path, gpus) -> None:
    gpus(0)
    preflight_train(validate_train_config(train_config(shards, "trainer.devices=4")))  # experiment=demo: trainer=cpu


def test_unknown_key_and_wrong_type_are_one_line_naming_the_key(shards: Path) -> None:
    cfg = train_config(shards)
    with open_dict(cfg):
        cfg.optim.learning_rate = 0.1
    with pytest.raises(ConfigError, match=r"^invalid config key 'optim\.learning_rate': [^\n]*$"):
        validate_train_config(cfg)
    cfg = train_config(shards, "data.num_workers=two")
    with pytest.raises(ConfigError, match=r"^invalid config key 'data\.num_workers': [^\n]*'two'[^\n]*$"):
        validate_train_config(cfg)


def test_finetune_checks_its_pretrained_checkpoint(shards: Path, tmp_path: Path) -> None:
    missing = tmp_path / "Cnn14_pretrained.pth"
    cfg = train_config(shards, f"finetune.checkpoint={missing}", experiment="demo_finetune")
    with pytest.raises(ConfigError, match=rf"^finetune\.checkpoint={missing} does not exist$"):
        preflight_finetune(validate_finetune_config(cfg))


def eval_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


def test_eval_config_schema(shards: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ckpt_path is required"):
        validate_eval_config(eval_config(f"data_dir={shards}"))
    with pytest.raises(ConfigError, match=r"^invalid config key 'batch_size': .*'lots'"):
        validate_eval_config(eval_config("ckpt_path=a.ckpt", f"data_dir={shards}", "batch_size=lots"))
    with pytest.raises(ConfigError, match=r"^invalid config key 'batchsize'"):
        validate_eval_config(eval_config("ckpt_path=a.ckpt", f"data_dir={shards}", "+batchsize=3"))


def test_eval_preflight_names_paths_and_gpus(shards: Path, tmp_path: Path, gpus) -> None:
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"")
    missing = tmp_path / "gone.ckpt"
    cases = {
        f"ckpt_path={missing} does not exist": [f"ckpt_path={missing}", f"data_dir={shards}"],
        f"data_dir={tmp_path / 'eval'} does not exist": [f"ckpt_path={checkpoint}", f"data_dir={tmp_path / 'eval'}"],
        "accelerator=cuda but this machine has no CUDA GPU": [
            f"ckpt_path={checkpoint}",
            f"data_dir={shards}",
            "accelerator=cuda",
        ],
    }
    gpus(0)
    for expected, overrides in cases.items():
        with pytest.raises(ConfigError) as error:
            preflight_eval(validate_eval_config(eval_config(*overrides)))
        assert str(error.value).startswith(expected)
    preflight_eval(validate_eval_config(eval_config(f"ckpt_path={checkpoint}", f"data_dir={shards}")))


@pytest.mark.slow
def test_panns_train_with_a_missing_train_dir_fails_with_one_line(shards: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_shards"
    result = subprocess.run(
        [
            str(BIN / "panns-train"),
            "experiment=demo",
            f"data.train_dir={missing}",
            f"data.val_dir={shards}",
            f"data.test_dir={shards}",
            f"paths.root_dir={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"panns-train: data.train_dir={missing} does not exist (expected a shard set directory holding "
        "manifest.json, made by panns-prepare)"
    ), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
