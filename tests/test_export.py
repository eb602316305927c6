"""ONNX / TorchScript export: outputs match PyTorch within 1e-4, dynamic axes, the CLI's metadata."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from torch import nn

from panns_lightning.cli import export as export_cli
from panns_lightning.export import ExportReport, export_model
from panns_lightning.models import FRONTEND_DEFAULTS, build_model
from test_inference_support import LABEL_NAMES, SMALL_FRONTEND, cnn6_checkpoint

pytestmark = pytest.mark.usefixtures("two_torch_threads")

TOLERANCE = 1e-4


@functools.lru_cache(maxsize=None)
def zoo_model(name: str) -> nn.Module:
    """One randomly initialised model per name for the whole module (Cnn14 takes seconds to build)."""
    torch.manual_seed(0)
    return build_model(name, **FRONTEND_DEFAULTS[name], classes_num=527).eval()


def check(report: ExportReport, outputs: list[str]) -> None:
    assert report.outputs == outputs
    assert report.max_abs_diff and max(report.max_abs_diff.values()) <= TOLERANCE, report.max_abs_diff


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_cnn14_exports_with_dynamic_batch_and_time(format: str, tmp_path) -> None:
    if format == "onnx":
        pytest.importorskip("onnxruntime")
    model = zoo_model("Cnn14_16k")  # Cnn14 at its 16 kHz front end: 1 s = 16000 samples
    path = tmp_path / f"cnn14.{format}"
    report = export_model(model, path, format, 16000, seconds=1.0)
    check(report, ["clipwise_output", "embedding"])
    assert report.dynamic_time and report.notes == []
    # Two other lengths (one at another batch size); no card, so the third is longer than the example.
    assert set(report.max_abs_diff) == {"B=2,T=11680", "B=1,T=21920", "B=1,T=16000"}
    assert not model.training  # exporting must not leave the model in training mode

    # The file on its own, as a deployment would load it: named input/outputs, a third shape.
    waveform = np.random.default_rng(5).standard_normal((4, 20000)).astype(np.float32) * 0.1
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["waveform"]
        assert [o.name for o in session.get_outputs()] == ["clipwise_output", "embedding"]
        clipwise, embedding = session.run(None, {"waveform": waveform})
    else:
        with torch.no_grad():
            clipwise, embedding = (t.numpy() for t in torch.jit.load(str(path))(torch.from_numpy(waveform)))
    with torch.no_grad():
        expected = model(torch.from_numpy(waveform))
    assert clipwise.shape == (4, 527) and embedding.shape == (4, 2048)
    np.testing.assert_allclose(clipwise, expected["clipwise_output"].numpy(), atol=TOLERANCE)
    np.testing.assert_allclose(embedding, expected["embedding"].numpy(), atol=TOLERANCE)


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_wavegram_logmel_cnn14_exports_with_a_dynamic_time_axis_at_another_hop(format: str, tmp_path) -> None:
    if format == "onnx":
        pytest.importorskip("onnxruntime")
    # At hop 80 the Wavegram's frames are repeated 4 times to meet the log-mel's; that matching used
    # to branch on traced lengths in Python, which froze the time axis at the example's length.
    torch.manual_seed(0)
    frontend = dict(sample_rate=8000, window_size=256, hop_size=80, mel_bins=64, fmin=50, fmax=4000)
    model = build_model("Wavegram_Logmel_Cnn14", **frontend, classes_num=5).eval()
    report = export_model(model, tmp_path / f"wavegram.{format}", format, 8000, seconds=1.0)
    check(report, ["clipwise_output", "embedding"])
    assert report.dynamic_time and report.notes == []
    assert set(report.max_abs_diff) == {"B=2,T=5840", "B=1,T=10960", "B=1,T=8000"}


class LengthSpecificModel(nn.Module):
    """Python arithmetic on the input length: tracing freezes it, as in the Wavegram branch."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        segments = int(waveform.shape[1]) // 100
        pooled = waveform[:, : segments * 100].reshape(waveform.shape[0], segments, 100).mean(dim=2)
        return {"clipwise_output": torch.sigmoid(pooled[:, :3] * self.scale), "embedding": pooled[:, :4]}


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_a_time_axis_that_cannot_be_dynamic_falls_back_to_fixed(format: str, tmp_path) -> None:
    if format == "onnx":
        pytest.importorskip("onnxruntime")
    report = export_model(LengthSpecificModel(), tmp_path / f"toy.{format}", format, 1000, seconds=1.0)
    assert not report.dynamic_time
    assert len(report.notes) == 1 and "time axis fixed at 1000 samples" in report.notes[0]
    check(report, ["clipwise_output", "embedding"])


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_cli_exports_a_training_checkpoint_with_metadata(format: str, tmp_path, capsys) -> None:
    if format == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"cnn6.{format}"
    code = export_cli.main([str(cnn6_checkpoint()), "--format", format, "--out", str(out), "--seconds", "1"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert out.is_file() and f"wrote {out} ({format}, Cnn6, 8000 Hz" in printed.out
    assert "max abs diff" in printed.out
    metadata = json.loads((tmp_path / f"cnn6.{format}.json").read_text(encoding="utf-8"))
    assert metadata["labels"] == LABEL_NAMES and metadata["frontend"] == SMALL_FRONTEND
    assert metadata["input"]["sample_rate"] == 8000 and metadata["dynamic_time"] is True
    assert max(metadata["max_abs_diff"].values()) <= TOLERANCE


def test_cli_reports_an_unloadable_checkpoint(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert export_cli.main([str(bad), "--format", "torchscript"]) == 1
    assert f"cannot load checkpoint {bad}" in capsys.readouterr().err
