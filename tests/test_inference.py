"""AudioTagger: checkpoint kinds, labels, resampling/down-mixing, windowing and aggregation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from panns_lightning import inference
from panns_lightning.inference import AudioTagger, CheckpointLoadError, plan_windows, window_length
from panns_lightning.labels import read_label_csv
from panns_lightning.models import reader
from panns_lightning.training.checkpoints import load_tagging_module
from test_inference_support import (
    LABEL_NAMES,
    SMALL_FRONTEND,
    audioset_csv,
    cnn6_checkpoint,
    lightning_checkpoint_content,
    published_cnn6,
    sed_tagger,
    workdir,
)

pytestmark = pytest.mark.usefixtures("two_torch_threads")

RATE = SMALL_FRONTEND["sample_rate"]
HOP = SMALL_FRONTEND["hop_size"]


def noise(seconds: float, rate: int = RATE, seed: int = 0, channels: int | None = None) -> np.ndarray:
    shape = (int(seconds * rate),) if channels is None else (channels, int(seconds * rate))
    return (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(np.float32)


def direct(model: torch.nn.Module, waveform: np.ndarray) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        return {k: v[0].numpy() for k, v in model(torch.from_numpy(waveform)[None]).items()}


def test_lightning_checkpoint_gives_model_labels_and_frontend_from_the_file() -> None:
    path = cnn6_checkpoint()
    module = load_tagging_module(path)  # the project's own loader reads what the test wrote
    assert module.label_names == LABEL_NAMES

    tagger = AudioTagger(path)
    assert (tagger.model_name, tagger.labels, tagger.sample_rate) == ("Cnn6", LABEL_NAMES, RATE)
    assert tagger.window_seconds == 10.0  # no clip length recorded: the PANNs default
    assert not tagger.model.training

    waveform = noise(2.0)
    result = tagger.tag(waveform, RATE, top_k=3)
    expected = direct(module.model, waveform)["clipwise_output"]
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    assert [name for name, _ in result.top] == [LABEL_NAMES[i] for i in np.argsort(-expected)[:3]]
    assert [p for _, p in result.top] == sorted((p for _, p in result.top), reverse=True)
    np.testing.assert_allclose(tagger.embed(waveform, RATE), direct(module.model, waveform)["embedding"], atol=1e-6)


def test_window_defaults_to_the_checkpoints_training_clip_length() -> None:
    path = workdir() / "cropped.ckpt"
    torch.save(lightning_checkpoint_content("Cnn6", datamodule_hyper_parameters={"train_crop_samples": 2 * RATE}), path)
    assert AudioTagger(path).window_seconds == 2.0
    assert AudioTagger(path, window_seconds=3.0).window_seconds == 3.0


def test_lightning_checkpoint_refuses_another_model_name() -> None:
    with pytest.raises(CheckpointLoadError, match="holds a 'Cnn6' model.*'Cnn10'"):
        AudioTagger(cnn6_checkpoint(), model_name="Cnn10")


def test_published_file_infers_the_model_and_names_classes_from_the_csv(caplog) -> None:
    names = list(read_label_csv(audioset_csv()).names)
    tagger = AudioTagger(published_cnn6(), labels_csv=audioset_csv())
    assert (tagger.model_name, tagger.sample_rate) == ("Cnn6", 32000)  # inferred from the key layout
    assert tagger.labels == names
    result = tagger.tag(noise(1.0, rate=32000), 32000, top_k=5)
    assert len(result.top) == 5 and result.probabilities.shape == (527,)
    assert all(name in names for name, _ in result.top)

    with caplog.at_level(logging.WARNING, logger="panns_lightning.inference"):
        unnamed = AudioTagger(published_cnn6(), model_name="Cnn6")
    assert unnamed.labels[:2] == ["class_0", "class_1"] and unnamed.labels[-1] == "class_526"
    assert "no labels CSV" in caplog.text and "class_labels_indices.csv" in caplog.text


def test_a_labels_csv_that_contradicts_the_card_is_refused(tmp_path) -> None:
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text('index,mid,display_name\n0,/m/a,"A"\n1,/m/b,"B"\n', encoding="utf-8")
    with pytest.raises(
        CheckpointLoadError, match=r"cnn6.ckpt: its model card names 5 classes, but the labels given name 2"
    ):
        AudioTagger(cnn6_checkpoint(), labels_csv=csv_path)
    rows = "".join(f'{i},/m/{i},"{name}"\n' for i, name in enumerate([*LABEL_NAMES[:4], "Wind"]))
    csv_path.write_text("index,mid,display_name\n" + rows, encoding="utf-8")
    with pytest.raises(CheckpointLoadError, match=r"names class 4 'Engine', but the labels given name it 'Wind'"):
        AudioTagger(cnn6_checkpoint(), labels_csv=csv_path)  # no silent renaming


def test_model_name_inference_uses_the_file_name_only_to_break_ties(monkeypatch, tmp_path) -> None:
    tie = (["Cnn14", "Cnn14_DecisionLevelAvg", "Cnn14_DecisionLevelMax"], 1.0)
    monkeypatch.setattr(reader, "best_matching_models", lambda state: tie)
    assert inference.infer_model_name({}, "Cnn14_DecisionLevelMax_mAP=0.385.pth") == "Cnn14_DecisionLevelMax"
    assert inference.infer_model_name({}, "Cnn14_mAP=0.431.pth") == "Cnn14"
    with pytest.raises(
        CheckpointLoadError, match="fits Cnn14 / Cnn14_DecisionLevelAvg / Cnn14_DecisionLevelMax equally"
    ):
        inference.infer_model_name({}, "weights.pth")
    monkeypatch.setattr(reader, "best_matching_models", lambda state: (["ResNet22"], 0.4))
    with pytest.raises(CheckpointLoadError, match="no zoo model matches.*ResNet22 with 40%"):
        inference.infer_model_name({}, "weights.pth")


def test_any_rate_and_channel_layout_is_downmixed_and_resampled() -> None:
    tagger = AudioTagger(cnn6_checkpoint())
    stereo = noise(2.0, rate=22050, channels=2)
    reference = tagger.infer(stereo.mean(axis=0), 22050)
    for layout in (stereo, stereo.T, torch.from_numpy(stereo)):
        output = tagger.infer(layout, 22050)
        np.testing.assert_allclose(output.clipwise, reference.clipwise, atol=1e-6)
        assert output.duration == pytest.approx(2.0, abs=1e-3)
    with pytest.raises(ValueError, match="NaN or inf"):
        tagger.infer(np.full(RATE, np.nan, dtype=np.float32), RATE)


def test_long_input_is_windowed_and_framewise_output_covers_it() -> None:
    tagger = sed_tagger()
    assert tagger.is_sed and tagger.window_samples == 10 * RATE
    waveform = noise(25.0)
    output = tagger.infer(waveform, RATE)

    np.testing.assert_array_equal(output.window_starts, [0.0, 10.0, 20.0])
    assert output.framewise.shape == (25 * RATE // HOP + 1, len(LABEL_NAMES))
    assert output.frame_times[0] == 0.0 and output.frame_times[-1] == pytest.approx(25.0)
    assert np.all(np.diff(output.frame_times) == pytest.approx(HOP / RATE))

    pieces = [direct(tagger.model, waveform[start:stop]) for start, stop in plan_windows(len(waveform), 10 * RATE)]
    per_window = 10 * RATE // HOP
    np.testing.assert_allclose(output.framewise[:per_window], pieces[0]["framewise_output"][:per_window], atol=1e-6)
    np.testing.assert_allclose(output.framewise[2 * per_window :], pieces[2]["framewise_output"], atol=1e-6)
    np.testing.assert_allclose(output.clipwise, np.max([p["clipwise_output"] for p in pieces], axis=0), atol=1e-6)
    weights = np.array([10.0, 10.0, 5.0]) / 25.0
    np.testing.assert_allclose(output.embedding, sum(w * p["embedding"] for w, p in zip(weights, pieces)), atol=1e-5)

    sed = tagger.sed(waveform[:RATE], RATE)
    assert sed.framewise.shape == (RATE // HOP + 1, 5) and sed.labels == LABEL_NAMES


def test_short_tail_and_short_input_are_padded_to_the_minimum_window() -> None:
    tagger = sed_tagger()
    waveform = noise(20.1)  # windows 10 s, 10 s and a 0.1 s tail the CNN could not pool
    output = tagger.infer(waveform, RATE)
    assert len(output.window_starts) == 3
    assert output.framewise.shape[0] == len(waveform) // HOP + 1
    assert tagger.infer(noise(0.05), RATE).framewise.shape[0] == int(0.05 * RATE) // HOP + 1
    assert tagger.logmel(waveform).shape == (len(waveform) // HOP + 1, SMALL_FRONTEND["mel_bins"])


def test_sed_on_a_clip_level_model_says_which_models_can() -> None:
    with pytest.raises(ValueError, match="Cnn6 has no framewise output.*Cnn14_DecisionLevelMax"):
        AudioTagger(cnn6_checkpoint()).sed(noise(1.0), RATE)


def test_plan_windows_and_window_length() -> None:
    assert plan_windows(25, 10) == [(0, 10), (10, 20), (20, 25)]
    assert plan_windows(10, 10) == [(0, 10)]
    assert plan_windows(3, 10) == [(0, 3)]
    assert window_length(10.0, 32000, 320) == 320000
    assert window_length(1.005, 8000, 160) == 8000  # whole hops, so frame grids line up
    with pytest.raises(ValueError):
        plan_windows(0, 10)
