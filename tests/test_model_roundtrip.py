"""Every model file describes itself: the round-trip matrix of the model card.

Three models × four files, each read back with no flags by ``AudioTagger``, ``panns-tag`` and
``hear.load_model`` (torch files; an exported graph has no feature maps for HEAR):

* Cnn14, 32 kHz, 64 mels, multi-label, 10 s clips (slow: 80 M parameters written and read ~10 times);
* Cnn6, 16 kHz, 32 mels, single-label, 5 s clips, trained with ``stft="fft"`` (what CPU runs use);
* that Cnn6 fine-tuned on three custom classes (its card names the parent checkpoint).

Files: the Lightning ``.ckpt`` (card written by the module's checkpoint hook), ``panns-export
--format panns`` (the Cnn14 one saved as ``model.pth``: no zoo name to go by), ONNX and TorchScript.
Class names must be the ``.ckpt``'s and probabilities equal to its within 1e-4; ONNX is checked
at three clip lengths. Each file is built once per module and reused; weights are random with
random BatchNorm statistics, so a mix-up of keys or activations cannot hide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from panns_lightning import hear
from panns_lightning.cli import export as export_cli
from panns_lightning.cli import tag as tag_cli
from panns_lightning.inference import AudioTagger
from panns_lightning.training.finetune import FineTuneModule
from panns_lightning.training.module import TaggingModule
from test_inference_support import randomise_

pytestmark = pytest.mark.usefixtures("two_torch_threads")

TOLERANCE = 1e-4
CARD_KEY = "model_card"
FORMATS = ("ckpt", "pth", "onnx", "torchscript")
CNN6_16K_32MEL = dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000)
CNN14_PAPER = dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000)


@dataclass
class Row:
    """One model of the matrix: its files, what its card must say, and the probabilities of its .ckpt."""

    name: str
    model: str
    labels: list[str]
    multilabel: bool
    clip_seconds: float
    files: dict[str, Path]


def labels(names: list[str]) -> list[dict]:
    return [{"index": i, "mid": f"/t/{i}", "name": name} for i, name in enumerate(names)]


def save_lightning(module: TaggingModule, path: Path, clip_samples: int, data: dict) -> Path:
    """What Lightning writes, through the module's own checkpoint hook (the card comes from there)."""
    module.card_clip_samples = clip_samples
    module.card_provenance = {**getattr(module, "card_provenance", {}), "training_data": data}
    checkpoint = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def export_all(ckpt: Path, folder: Path, pth_name: str) -> dict[str, Path]:
    """panns-export with no flags but the format: the .pth, ONNX and TorchScript files."""
    files = {"ckpt": ckpt}
    for format, name in (("panns", pth_name), ("onnx", "model.onnx"), ("torchscript", "model.torchscript.pt")):
        out = folder / name
        assert export_cli.main([str(ckpt), "--format", format, "--out", str(out), "--seconds", "1"]) == 0
        files["pth" if format == "panns" else format] = out
    return files


def build_cnn14(folder: Path) -> Row:
    names = [f"sound {i}" for i in range(10)]
    torch.manual_seed(0)
    module = TaggingModule({"name": "Cnn14", **CNN14_PAPER}, labels(names), multilabel=True)
    randomise_(module.model)
    data = {"dataset": "audioset", "split": "balanced_train", "num_clips": 20550, "resample": "sinc"}
    ckpt = save_lightning(module, folder / "cnn14.ckpt", 320000, data)
    del module
    return Row("cnn14", "Cnn14", names, True, 10.0, export_all(ckpt, folder, "model.pth"))


def build_cnn6(folder: Path) -> Row:
    names = ["dog", "rain", "siren", "speech", "engine", "bird", "door", "glass", "horn", "cat", "wind", "car"]
    torch.manual_seed(1)
    config = {"name": "Cnn6", **CNN6_16K_32MEL, "stft": "fft"}
    module = TaggingModule(config, labels(names), multilabel=False)
    randomise_(module.model)
    data = {"dataset": "folder", "split": "train", "num_clips": 480, "resample": "sinc"}
    ckpt = save_lightning(module, folder / "cnn6.ckpt", 5 * 16000, data)
    return Row("cnn6", "Cnn6", names, False, 5.0, export_all(ckpt, folder, "cnn6.pth"))


def build_finetuned(folder: Path, parent: Path) -> Row:
    names = ["kettle", "doorbell", "vacuum"]
    torch.manual_seed(2)
    config = {"name": "Cnn6", **CNN6_16K_32MEL, "stft": "fft"}
    module = FineTuneModule(config, labels(names), checkpoint=str(parent), mode="linear_probe")
    randomise_(module.model.fc_audioset)
    data = {"dataset": "kitchen", "split": "train", "num_clips": 60, "resample": "sinc"}
    ckpt = save_lightning(module, folder / "tuned.ckpt", 5 * 16000, data)
    return Row("finetuned", "Cnn6", names, False, 5.0, export_all(ckpt, folder, "tuned.pth"))


@pytest.fixture(scope="module")
def cnn6(tmp_path_factory: pytest.TempPathFactory) -> Row:
    return build_cnn6(tmp_path_factory.mktemp("cnn6"))


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory, cnn6: Row) -> Row:
    return build_finetuned(tmp_path_factory.mktemp("finetuned"), cnn6.files["ckpt"])


@pytest.fixture(scope="module")
def cnn14(tmp_path_factory: pytest.TempPathFactory) -> Row:
    return build_cnn14(tmp_path_factory.mktemp("cnn14"))


def noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)


def check_row(row: Row, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Every file of ``row``: card, labels and probabilities as the .ckpt's; panns-tag; ONNX at three lengths."""
    reference = AudioTagger(row.files["ckpt"])
    rate = reference.sample_rate
    assert reference.labels == row.labels and reference.window_seconds == row.clip_seconds
    clip = noise(1.3, rate)
    lengths = (1.0, 1.37, 2.2)  # the shortest input the card allows, and two lengths that are not whole hops
    expected = {seconds: reference.infer(noise(seconds, rate, seed=3), rate).clipwise for seconds in lengths}
    if not row.multilabel:
        assert all(abs(p.sum() - 1) < 1e-5 for p in expected.values())  # softmax, as panns-tag shows
    audio = tmp_path / "clip.wav"
    sf.write(audio, clip, rate, subtype="FLOAT")
    reference_top = reference.tag(clip, rate, top_k=3).top
    for format, path in row.files.items():
        tagger = reference if format == "ckpt" else AudioTagger(path)  # no flags: the card says it all
        card = tagger.card
        assert (card.model, card.labels, card.multilabel) == (row.model, row.labels, row.multilabel), format
        assert card.activation == ("sigmoid" if row.multilabel else "softmax")
        assert tagger.window_seconds == row.clip_seconds and tagger.sample_rate == rate, format
        for seconds in lengths if format == "onnx" else lengths[:1]:
            got = tagger.infer(noise(seconds, rate, seed=3), rate).clipwise
            np.testing.assert_allclose(got, expected[seconds], atol=TOLERANCE, err_msg=f"{row.name} {format} {seconds}")
        code = tag_cli.main([str(audio), "--checkpoint", str(path), "--json", "--top-k", "3"])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        top = json.loads(printed.out)["results"][0]["top"]
        assert [entry["label"] for entry in top] == [name for name, _ in reference_top], format
        np.testing.assert_allclose([e["probability"] for e in top], [p for _, p in reference_top], atol=TOLERANCE)
    # --stream reads the same way: an exported graph runs hop by hop with the card's rate and labels.
    code = tag_cli.main(["--stream", str(audio), "--checkpoint", str(row.files["onnx"]), "--jsonl", "--top-k", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    tops = [line["top"][0]["label"] for line in lines if line["type"] == "top"]
    assert code == 0 and lines[0]["sample_rate"] == rate and tops and set(tops) <= set(row.labels)


def check_hear(row: Row) -> None:
    """hear.load_model on the torch files, no model name: the same embeddings."""
    reference = hear.load_model(str(row.files["ckpt"]))
    audio = torch.from_numpy(noise(1.2, reference.sample_rate, seed=5))[None]
    expected = hear.get_scene_embeddings(audio, reference)
    loaded = hear.load_model(str(row.files["pth"]))
    assert loaded.model_name == row.model
    torch.testing.assert_close(hear.get_scene_embeddings(audio, loaded), expected, atol=TOLERANCE, rtol=0)
    with pytest.raises(ValueError, match="exported onnx graph; .*give the .ckpt or the panns-export"):
        hear.load_model(str(row.files["onnx"]))


def check_cards(row: Row) -> None:
    """What each file says of itself: the same card, and its own outputs' activation."""
    ckpt = torch.load(row.files["ckpt"], map_location="cpu", weights_only=True)[CARD_KEY]
    pth = torch.load(row.files["pth"], map_location="cpu", weights_only=True)
    assert set(pth) == {"model", CARD_KEY}
    for card in (ckpt, pth[CARD_KEY]):
        assert card["clip_samples"] == int(row.clip_seconds * card["frontend"]["sample_rate"])
        assert card["provenance"]["training_data"]["num_clips"] > 0
        assert card["artifact"]["clipwise_output"] == "sigmoid"  # the zoo network's own output
    activation = "sigmoid" if row.multilabel else "softmax"
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(row.files["onnx"]), providers=["CPUExecutionProvider"])
    onnx_card = json.loads(session.get_modelmeta().custom_metadata_map[CARD_KEY])
    extra = {"model_card.json": ""}
    torch.jit.load(str(row.files["torchscript"]), _extra_files=extra)
    for card in (onnx_card, json.loads(extra["model_card.json"])):
        assert card["artifact"]["clipwise_output"] == activation == card["activation"]
        assert card["artifact"]["dynamic_time"] is True  # stft="fft" included (its ONNX used to be fixed at 10 s)
    sidecar = json.loads(Path(f"{row.files['pth']}.json").read_text(encoding="utf-8"))
    assert sidecar["model_card"] == pth[CARD_KEY]  # the sidecar is a copy; the file carries the card


def test_exported_graphs_output_what_panns_tag_shows_at_any_length(cnn6: Row) -> None:
    """A single-label model's ONNX / TorchScript ``clipwise_output`` is the softmax panns-tag shows (not the
    sigmoids of its logits), and its FFT-STFT ONNX graph takes any length (not only the export's)."""
    onnxruntime = pytest.importorskip("onnxruntime")
    reference = AudioTagger(cnn6.files["ckpt"])
    session = onnxruntime.InferenceSession(str(cnn6.files["onnx"]), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(cnn6.files["torchscript"]))
    for seconds in (1.0, 1.37, 2.2):  # the export's example was 1 s
        clip = noise(seconds, 16000, seed=7)
        expected = reference.infer(clip, 16000).clipwise
        assert abs(expected.sum() - 1) < 1e-5
        onnx_clipwise = session.run(None, {"waveform": clip[None]})[0][0]
        with torch.no_grad():
            script_clipwise = scripted(torch.from_numpy(clip[None]))[0][0].numpy()
        np.testing.assert_allclose(onnx_clipwise, expected, atol=TOLERANCE)
        np.testing.assert_allclose(script_clipwise, expected, atol=TOLERANCE)


def test_cnn6_16k_32mel_single_label(cnn6: Row, capsys, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    check_row(cnn6, capsys, tmp_path)
    check_hear(cnn6)
    check_cards(cnn6)


def test_finetuned_on_custom_classes(finetuned: Row, cnn6: Row, capsys, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    check_row(finetuned, capsys, tmp_path)
    check_hear(finetuned)
    check_cards(finetuned)
    parent = torch.load(finetuned.files["pth"], weights_only=True)[CARD_KEY]["provenance"]["parent"]
    assert parent == {
        "file": "cnn6.ckpt",
        "kind": "lightning",
        "has_card": True,
        "model": "Cnn6",
        "training_data": {"dataset": "folder", "split": "train", "num_clips": 480},
    }


@pytest.mark.slow  # Cnn14: 80 M parameters, four 327 MB files written and each read back three times
def test_cnn14_32k_64mel_multi_label(cnn14: Row, capsys, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    check_row(cnn14, capsys, tmp_path)
    check_hear(cnn14)  # model.pth: its layout fits Cnn14 and the DecisionLevel models alike; the card decides
    check_cards(cnn14)
