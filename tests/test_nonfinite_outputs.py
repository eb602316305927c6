"""Acceptance (issue 19, case 7 and case 9's last item): non-finite outputs fail, never verify or print.

``max(worst, nan)`` keeps ``worst``, so a checkpoint whose weights are all NaN exported "verified"
in every format, ``panns-tag`` printed ``nan`` probabilities and evaluation scored them. Now each
stops with ``NonFiniteOutputError`` (a ValueError; matched here by type and message, so that
these tests run against code without it) naming the output, and an export whose own check fails
leaves no file behind.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from panns_lightning.cli import export as export_cli
from panns_lightning.cli import tag as tag_cli
from panns_lightning.export import ExportVerificationError, export_model, export_panns_checkpoint
from panns_lightning.models import build_model
from panns_lightning.training.metrics import TaggingMetrics
from shard_fixtures import FixtureClip, write_shard_set
from test_inference_support import LABEL_NAMES, SMALL_FRONTEND, lightning_checkpoint_content

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def nan_model() -> torch.nn.Module:
    model = build_model("Cnn6", **SMALL_FRONTEND, classes_num=5).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(math.nan)
    return model


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    content = lightning_checkpoint_content("Cnn6")
    content["state_dict"] = {
        key: torch.full_like(value, math.nan) if value.is_floating_point() else value
        for key, value in content["state_dict"].items()
    }
    path = tmp_path_factory.mktemp("nan") / "nan.ckpt"
    torch.save(content, path)
    return path


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "a.wav"
    soundfile.write(path, np.random.default_rng(0).uniform(-0.3, 0.3, 8000).astype(np.float32), 8000)
    return path


def test_require_finite_names_the_output_and_counts() -> None:
    from panns_lightning.models import NonFiniteOutputError, require_finite

    require_finite(torch.zeros(3), "fine")
    with pytest.raises(NonFiniteOutputError, match=r"^probs holds NaN and infinite values \(2 of 4\)"):
        require_finite(np.array([0.5, np.nan, np.inf, 0.1]), "probs")


def test_an_all_nan_model_is_not_exported_in_any_format(tmp_path: Path) -> None:
    out = tmp_path / "nan.torchscript.pt"
    with pytest.raises(ValueError, match=r"^Cnn6's clipwise_output in PyTorch, before export holds NaN"):
        export_model(nan_model(), out, "torchscript", 8000, seconds=1.0)
    with pytest.raises(ValueError, match=r"^Cnn6's clipwise_output in PyTorch, before export holds NaN"):
        export_panns_checkpoint(nan_model(), tmp_path / "nan.pth", "Cnn6", SMALL_FRONTEND, seconds=1.0)
    assert list(tmp_path.iterdir()) == []


def test_a_panns_export_that_fails_its_own_check_leaves_no_file(tmp_path: Path) -> None:
    model = build_model("Cnn6", **SMALL_FRONTEND, classes_num=5).eval()
    # The network now computes something its weights do not say: read back, the file disagrees.
    model.register_forward_hook(
        lambda module, inputs, output: {**output, "clipwise_output": output["clipwise_output"] * 0.5}
    )
    out = tmp_path / "odd.pth"
    with pytest.raises(ExportVerificationError, match="read back into upstream's Cnn6"):
        export_panns_checkpoint(model, out, "Cnn6", SMALL_FRONTEND, seconds=1.0)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_panns_export_cli_refuses_a_nan_checkpoint_in_one_line(nan_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "nan.pth"
    assert export_cli.main([str(nan_checkpoint), "--format", "panns", "--out", str(out), "--seconds", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "NonFiniteOutputError: Cnn6's clipwise_output in PyTorch, before export holds NaN" in err[0]
    )
    assert not out.exists()


def test_panns_tag_reports_nan_probabilities_instead_of_printing_them(nan_checkpoint: Path, wav: Path, capsys) -> None:
    assert tag_cli.main([str(wav), "--checkpoint", str(nan_checkpoint)]) == tag_cli.EXIT_FAILED
    out, err = capsys.readouterr()
    assert "nan" not in out.lower()
    assert err.strip().splitlines() == [
        f"panns-tag: {wav}: Cnn6's clipwise_output holds NaN values (5 of 5): the weights or the input are not "
        "finite (a checkpoint saved after training diverged?)"
    ]


def test_scoring_nan_probabilities_is_an_error_not_a_number() -> None:
    metrics = TaggingMetrics(num_classes=2)
    metrics.update(torch.tensor([[0.2, math.nan], [0.9, 0.1]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"clip probabilities on this set holds NaN values \(1 of 4\)"):
        metrics.compute()


def test_panns_eval_of_a_nan_checkpoint_stops_before_scoring(nan_checkpoint: Path, tmp_path: Path) -> None:
    from panns_lightning.cli.evaluate import evaluate_checkpoint

    clips = [FixtureClip(f"c{i}", [i % 5]) for i in range(5)]
    data = write_shard_set(
        tmp_path / "eval", clips, [5], num_classes=5, label_names=LABEL_NAMES, sample_rate=8000, clip_samples=8000
    )
    with pytest.raises(ValueError, match="clip probabilities on this set holds NaN values"):
        evaluate_checkpoint(nan_checkpoint, data, batch_size=5, num_workers=0, accelerator="cpu")
