"""A checkpoint whose unpickling would run code is refused by every loader and runs nothing.

Each malicious file carries an object whose ``__reduce__`` creates a marker file when unpickled
the unsafe way (``pickle.load`` / ``torch.load(weights_only=False)``). Every entry point that takes
a checkpoint path — the library loaders, ``panns-tag``, ``panns-export``, ``panns-eval`` and
``panns-finetune`` — must fail with a message naming the file and saying it is not a
plain-weights checkpoint, and the marker must not exist afterwards.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from panns_lightning.cli import export as export_cli
from panns_lightning.cli import tag as tag_cli
from panns_lightning.cli.config_schema import ConfigError
from panns_lightning.cli.preflight import check_resume_checkpoint, check_weights_file
from panns_lightning.inference import AudioTagger, load_model
from panns_lightning.models import FRONTEND_DEFAULTS, build_model, load_panns_checkpoint
from panns_lightning.models.checkpoint import UnsafeCheckpointError, read_state_dict
from panns_lightning.training.checkpoints import (
    checkpoint_model_config,
    load_tagging_module,
    read_checkpoint,
)
from panns_lightning.training.finetune import FineTuneModule
from test_inference_support import LABELS, SMALL_FRONTEND
from train_fixtures import BIN, REPO

REFUSAL = "is not a plain-weights checkpoint"


class TouchOnUnpickle:
    """Unpickling this creates ``marker``: a harmless stand-in for a payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


class ShellOnUnpickle:
    """Unpickling this runs a shell command, the classic ``os.system`` payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


def lightning_shaped(marker: Path) -> dict[str, Any]:
    """Looks like one of our checkpoints (hyper_parameters + state_dict); a payload rides along."""
    return {
        "hyper_parameters": {
            "model_config": {"name": "Cnn6", **SMALL_FRONTEND},
            "labels": LABELS,
            "note": TouchOnUnpickle(marker),
        },
        "state_dict": {"model.fc_audioset.bias": torch.zeros(5)},
    }


def write_malicious(kind: str, folder: Path, marker: Path) -> Path:
    """``kind``: a zip-format torch file, a legacy torch file, or a plain pickle."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "zip_lightning":
        path = folder / "best.ckpt"
        torch.save(lightning_shaped(marker), path)
    elif kind == "legacy_published":
        path = folder / "Cnn6_mAP=0.343.pth"
        torch.save(
            {"model": {"fc_audioset.bias": torch.zeros(527)}, "iteration": ShellOnUnpickle(marker)},
            path,
            _use_new_zipfile_serialization=False,
        )
    else:
        path = folder / "weights.pkl"
        path.write_bytes(pickle.dumps({"model": TouchOnUnpickle(marker)}, protocol=2))
    return path


KINDS = ("zip_lightning", "legacy_published", "plain_pickle")


@pytest.fixture(params=KINDS)
def malicious(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    return write_malicious(request.param, tmp_path / "ckpts", marker), marker


@pytest.mark.parametrize("kind", KINDS)
def test_the_payload_really_runs_when_unpickled_unsafely(kind: str, tmp_path: Path) -> None:
    """Guards the other tests: a refusal only counts if the file is really dangerous."""
    marker = tmp_path / "PWNED"
    path = write_malicious(kind, tmp_path, marker)
    if kind == "plain_pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


def assert_refused(message: str, path: Path, marker: Path) -> None:
    assert str(path) in message and REFUSAL in message, message
    assert "weights_only=True" in message
    assert not marker.exists(), "the payload ran"


def small_cnn6() -> torch.nn.Module:
    return build_model("Cnn6", **FRONTEND_DEFAULTS["Cnn6"], classes_num=527)


LOADERS: dict[str, Callable[[Path], Any]] = {
    "load_panns_checkpoint": lambda path: load_panns_checkpoint(small_cnn6(), path),
    "read_state_dict": read_state_dict,
    "read_checkpoint": read_checkpoint,
    "load_tagging_module": load_tagging_module,
    "checkpoint_model_config": checkpoint_model_config,
    "FineTuneModule(checkpoint=...)": lambda path: FineTuneModule(
        {"name": "Cnn6", **SMALL_FRONTEND}, LABELS, checkpoint=str(path)
    ),
    "inference.load_model": load_model,
    "AudioTagger": AudioTagger,
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_python_loader_refuses_and_runs_nothing(loader: str, malicious: tuple[Path, Path]) -> None:
    path, marker = malicious
    with pytest.raises(UnsafeCheckpointError) as error:
        LOADERS[loader](path)
    assert_refused(str(error.value), path, marker)


def test_the_torch_escape_hatch_variable_does_not_reopen_the_door(
    malicious: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD only flips loads that leave weights_only unset; ours never do."""
    path, marker = malicious
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    for loader in (read_state_dict, read_checkpoint, load_model):
        with pytest.raises(UnsafeCheckpointError) as error:
            loader(path)
        assert_refused(str(error.value), path, marker)


@pytest.mark.parametrize("check", [check_weights_file, check_resume_checkpoint])
def test_preflight_refuses_resume_and_pretrained_checkpoints(
    check: Callable[..., Any], malicious: tuple[Path, Path]
) -> None:
    """panns-train/panns-finetune ``ckpt_path`` and ``finetune.checkpoint``: refused before any work."""
    path, marker = malicious
    with pytest.raises(ConfigError) as error:
        check("ckpt_path", str(path))
    assert str(error.value).startswith("ckpt_path: ")
    assert_refused(str(error.value), path, marker)


def test_tag_and_export_mains_refuse_with_one_line(malicious: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    path, marker = malicious
    assert tag_cli.main([str(path.parent / "clip.wav"), "--checkpoint", str(path)]) == 1
    assert export_cli.main([str(path), "--format", "torchscript", "--out", str(path.parent / "m.pt")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["panns-tag", "panns-export"]
    for line in lines:
        assert f"cannot load checkpoint {path}" in line
        assert_refused(line, path, marker)
    assert not (path.parent / "m.pt").exists()


def fake_shard_dir(folder: Path) -> Path:
    """Passes the preflight check (a directory with manifest.json); the checkpoint fails first."""
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({}))
    return folder


def run_script(name: str, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "offline"}
    return subprocess.run(
        [str(BIN / name), *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )


@pytest.mark.slow
def test_console_scripts_refuse_and_run_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = write_malicious("zip_lightning", tmp_path / "ckpts", marker)
    shards = fake_shard_dir(tmp_path / "shards")
    runs = {
        "panns-tag": run_script("panns-tag", tmp_path / "clip.wav", "--checkpoint", path),
        "panns-export": run_script("panns-export", path, "--format", "onnx", "--out", tmp_path / "m.onnx"),
        "panns-eval": run_script(
            "panns-eval", f"ckpt_path={path}", f"data_dir={shards}", f"hydra.run.dir={tmp_path / 'eval'}"
        ),
        "panns-finetune": run_script(
            "panns-finetune",
            "experiment=demo_finetune",
            f"data.train_dir={shards}",
            f"data.test_dir={shards}",
            f"finetune.checkpoint={path}",
            f"paths.root_dir={tmp_path}",
            f"hydra.run.dir={tmp_path / 'ft'}",
        ),
    }
    for name, result in runs.items():
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        assert result.returncode != 0, (name, result.stdout[-2000:])
        assert last.startswith(f"{name}: "), (name, result.stderr[-3000:])
        assert_refused(last, path, marker)
    assert "finetune.checkpoint" in runs["panns-finetune"].stderr.strip().splitlines()[-1]
