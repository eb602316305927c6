"""``panns-export --format panns``: upstream's ``{"model": state_dict}`` from any of our checkpoints.

The last test loads the file with the real ``panns_inference`` package (a dev dependency), offline:
its labels CSV comes from a temporary HOME and every download attempt fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from torch import nn

from panns_lightning.cli import export as export_cli
from panns_lightning.export import NotRepresentableError, export_panns_checkpoint
from panns_lightning.labels import read_label_csv
from panns_lightning.models import FRONTEND_DEFAULTS, build_model, load_panns_checkpoint
from panns_lightning.models.card import ModelCard
from panns_lightning.training.finetune import FineTuneModule
from test_inference_support import (
    LABEL_NAMES,
    LABELS,
    SMALL_FRONTEND,
    audioset_csv,
    cnn6_checkpoint,
    published_cnn6,
    randomise_,
)

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def read_upstream_file(path) -> dict[str, torch.Tensor]:
    """What upstream's code reads: ``model``, holding tensors only (weights-only loadable), and beside it
    the model card, plain data that upstream's loaders never look at."""
    content = torch.load(path, map_location="cpu", weights_only=True)
    assert list(content) in (["model", "model_card"], ["model"])  # the library call without a card writes none
    json.dumps(content.get("model_card"))  # plain JSON types only
    assert all(isinstance(value, torch.Tensor) for value in content["model"].values())
    floating = [value for value in content["model"].values() if value.is_floating_point()]
    assert floating and all(value.dtype == torch.float32 for value in floating)
    return content["model"]


def run_cli(*args: str) -> int:
    return export_cli.main([*args, "--seconds", "1"])


def test_a_training_checkpoint_becomes_upstreams_file(tmp_path, capsys) -> None:
    out = tmp_path / "cnn6.pth"
    assert run_cli("--checkpoint", str(cnn6_checkpoint()), "--format", "panns", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (upstream PANNs' {{'model': state_dict}}, fp32; Cnn6, 8000 Hz, 5 classes)" in printed
    assert "max abs diff 0.00e+00" in printed  # read back into a fresh Cnn6: identical outputs
    # 32 mel bins: upstream's Cnn6 hard-codes BatchNorm2d(64), so only this package can load it.
    assert "loads only in panns_lightning: upstream's Cnn6 hard-codes bn0 = BatchNorm2d(64)" in printed

    state = read_upstream_file(out)
    fresh = build_model("Cnn6", **SMALL_FRONTEND, classes_num=5)
    assert list(state) == list(fresh.state_dict())  # upstream's key names, in upstream's order
    fresh.load_state_dict(state, strict=True)
    metadata = json.loads((tmp_path / "cnn6.pth.json").read_text(encoding="utf-8"))
    assert metadata["format"] == "panns" and metadata["model_name"] == "Cnn6"
    assert metadata["frontend"] == SMALL_FRONTEND and metadata["labels"] == LABEL_NAMES


def test_a_finetuned_checkpoint_keeps_its_own_classes(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    module = FineTuneModule({"name": "Cnn6", **SMALL_FRONTEND}, LABELS[:3], checkpoint=None, mode="linear_probe")
    checkpoint = tmp_path / "finetuned.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, checkpoint)
    out = tmp_path / "finetuned.pth"
    assert run_cli(str(checkpoint), "--format", "panns", "--out", str(out)) == 0
    state = read_upstream_file(out)
    assert state["fc_audioset.bias"].shape == (3,)
    torch.testing.assert_close(state["fc_audioset.weight"], module.model.fc_audioset.weight.detach())
    printed = capsys.readouterr().out
    assert "loads only in panns_lightning" in printed  # 32 mel bins (SMALL_FRONTEND)
    assert "softmax(logit(clipwise_output))" in printed  # single-label: what its probabilities are upstream


def test_a_published_file_round_trips_unchanged(tmp_path) -> None:
    out = tmp_path / "again.pth"
    assert run_cli(str(published_cnn6()), "--model", "Cnn6", "--format", "panns", "--out", str(out)) == 0
    original = torch.load(published_cnn6(), weights_only=True)["model"]
    state = read_upstream_file(out)
    assert list(state) == list(original)
    for key, value in original.items():
        assert torch.equal(state[key], value), key


def test_bf16_weights_are_written_in_fp32(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("Cnn6", **SMALL_FRONTEND, classes_num=5).to(torch.bfloat16)
    expected = {key: value.float() for key, value in model.state_dict().items()}
    report = export_panns_checkpoint(model, tmp_path / "bf16.pth", "Cnn6", SMALL_FRONTEND, seconds=1.0)
    state = read_upstream_file(tmp_path / "bf16.pth")
    assert report.max_abs_diff and max(report.max_abs_diff.values()) == 0.0
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_a_network_upstream_could_not_load_is_refused_and_nothing_written(tmp_path) -> None:
    model = build_model("Cnn6", **SMALL_FRONTEND, classes_num=5)
    model.adapter = nn.Linear(4, 4)  # a module upstream's Cnn6 does not have
    out = tmp_path / "odd.pth"
    with pytest.raises(
        NotRepresentableError, match=r"upstream's Cnn6 .*unexpected keys \(adapter.bias, adapter.weight"
    ):
        export_panns_checkpoint(model, out, "Cnn6", SMALL_FRONTEND, seconds=1.0)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "panns"], "the checkpoint is required"),
        (["a.ckpt", "--checkpoint", "b.ckpt", "--format", "panns"], "two checkpoints given"),
    ],
)
def test_checkpoint_argument_errors_are_usage_errors(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main(args)
    assert exit_info.value.code == export_cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_the_output_may_not_overwrite_the_checkpoint(tmp_path, capsys) -> None:
    checkpoint = tmp_path / "weights.pth"
    shutil.copy(published_cnn6(), checkpoint)
    before = checkpoint.read_bytes()
    assert export_cli.main([str(checkpoint), "--format", "panns", "--out", str(checkpoint)]) == export_cli.EXIT_USAGE
    assert "is the checkpoint being exported" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before


@pytest.mark.slow  # a full-size Cnn14 built three times and a 327 MB file written and read twice
def test_panns_inference_audio_tagging_loads_the_export(tmp_path, monkeypatch) -> None:
    pytest.importorskip("librosa")  # panns_inference's own imports
    pytest.importorskip("matplotlib")
    home = tmp_path / "home"
    (home / "panns_data").mkdir(parents=True)
    shutil.copy(audioset_csv(), home / "panns_data" / "class_labels_indices.csv")
    monkeypatch.setenv("HOME", str(home))  # panns_inference.config reads ~/panns_data/class_labels_indices.csv

    def no_downloads(command: str) -> int:
        raise AssertionError(f"panns_inference tried to run {command!r}")

    monkeypatch.setattr(os, "system", no_downloads)  # it downloads with os.system("wget ...")
    panns_inference = pytest.importorskip("panns_inference")

    torch.manual_seed(0)
    ours = build_model("Cnn14", **FRONTEND_DEFAULTS["Cnn14"], classes_num=527)
    randomise_(ours)
    out = tmp_path / "Cnn14.pth"
    names = list(read_label_csv(audioset_csv()).names)
    card = ModelCard("Cnn14", dict(FRONTEND_DEFAULTS["Cnn14"]), names, "multi-label", 320000)
    report = export_panns_checkpoint(ours, out, "Cnn14", FRONTEND_DEFAULTS["Cnn14"], seconds=1.0, card=card)
    assert report.notes[1].startswith("panns_inference loads it as it is")
    # The card rides beside "model"; panns_inference reads checkpoint["model"] only (below, it loads).
    assert set(torch.load(out, map_location="cpu", weights_only=True, mmap=True)) == {"model", "model_card"}
    del ours  # the copy to compare with is read back from the file

    waveform = (np.random.default_rng(0).standard_normal((2, 32000)) * 0.3).astype(np.float32)
    tagger = panns_inference.AudioTagging(checkpoint_path=str(out), device="cpu")
    clipwise, embedding = tagger.inference(waveform)
    ours = load_panns_checkpoint(build_model("Cnn14", **FRONTEND_DEFAULTS["Cnn14"], classes_num=527), out).eval()
    with torch.no_grad():
        expected = ours(torch.from_numpy(waveform))
    assert clipwise.shape == (2, 527) and clipwise.std() > 1e-3  # not a comparison between constants
    np.testing.assert_allclose(clipwise, expected["clipwise_output"].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(embedding, expected["embedding"].numpy(), rtol=0, atol=1e-5)
    assert "panns_inference" in sys.modules
