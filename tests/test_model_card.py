"""The model card and its one reader: validation before any network is built, files that are not
checkpoints, overrides that contradict a card, what upstream's classes can load, raw PCM rates,
fine-tuning overrides, the clip length a training run records, and the import weight of tagging.

The round trip of every file format is tests/test_model_roundtrip.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from panns_lightning.cli import tag as tag_cli
from panns_lightning.export import upstream_notes
from panns_lightning.inference import AudioTagger, CheckpointLoadError, load_model
from panns_lightning.models import build_model, reader
from panns_lightning.models.card import CARD_KEY, CardError, ModelCard
from test_inference_support import LABELS, SMALL_FRONTEND, lightning_checkpoint_content
from train_fixtures import TINY_LABELS

pytestmark = pytest.mark.usefixtures("two_torch_threads")

FRONTEND_16K_32MEL = dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000)


def card_dict(**changes) -> dict:
    base = {
        "version": 1,
        "model": "Cnn6",
        "frontend": dict(SMALL_FRONTEND),
        "labels": [label["name"] for label in LABELS],
        "task": "multi-label",
        "clip_samples": 16000,
    }
    return {**base, **changes}


# ---- the card's own checks ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"frontend": dict(SMALL_FRONTEND, hop_size=0)},
            "frontend.hop_size must be an integer in 1..window_size=256, got 0",
        ),
        (
            {"frontend": dict(SMALL_FRONTEND, sample_rate=0)},
            "frontend.sample_rate must be an integer in 1..384000, got 0",
        ),
        (
            {"frontend": dict(SMALL_FRONTEND, mel_bins=10_000_000)},
            "frontend.mel_bins must be an integer in 1..129 (window_size // 2 + 1 frequency bins), got 10000000",
        ),
        (
            {"frontend": dict(SMALL_FRONTEND, fmax=9000)},
            "frontend.fmax must be a number in (50, sample_rate / 2 = 4000] Hz (above fmin), got 9000",
        ),
        (
            {"frontend": dict(SMALL_FRONTEND, window_size="1024")},
            "frontend.window_size must be an integer in 1..8192, got '1024'",
        ),
        ({"model": "Cnn99"}, "key 'model': expected a zoo model name, found 'Cnn99'"),
        ({"task": "regression"}, "key 'task': expected one of ['multi-label', 'single-label'], found 'regression'"),
        ({"activation": "softmax"}, "key 'activation': expected 'sigmoid' for a multi-label model, found 'softmax'"),
        ({"clip_samples": -5}, "key 'clip_samples': expected an integer in 1..28800000"),
        ({"labels": []}, "key 'labels': expected a non-empty list of names"),
        ({"version": 7}, "key 'version': expected 1"),
        ({"options": {"stft": "fast"}}, "key 'options.stft': expected one of ('conv', 'fft'), found 'fast'"),
    ],
)
def test_a_bad_card_is_one_line_naming_key_expected_and_found(changes: dict, message: str) -> None:
    with pytest.raises(CardError) as error:
        ModelCard.from_dict(card_dict(**changes), "model.pth")
    text = str(error.value)
    assert text.startswith("model.pth: ") and message in text and "\n" not in text


def test_a_card_round_trips_through_json() -> None:
    card = ModelCard.from_dict(card_dict(task="single-label", provenance={"training_data": {"num_clips": 3}}), "x")
    again = ModelCard.from_json(card.to_json(), "x")
    assert again == card and again.activation == "softmax" and again.min_samples == 8000


@pytest.mark.parametrize(
    "where, config, message",
    [
        (
            "lightning",
            dict(SMALL_FRONTEND, hop_size=0),
            "model_config.hop_size must be an integer in 1..window_size=256, got 0",
        ),
        ("lightning", dict(SMALL_FRONTEND, sample_rate=0), "model_config.sample_rate must be an integer in 1..384000"),
        ("panns", dict(SMALL_FRONTEND, mel_bins=10_000_000), "frontend.mel_bins must be an integer in 1..129"),
    ],
)
def test_a_hostile_config_is_refused_before_a_network_is_built(where, config, message, tmp_path, monkeypatch, capsys):
    path = tmp_path / "model.bin"
    if where == "lightning":
        content = lightning_checkpoint_content("Cnn6")
        content["hyper_parameters"]["model_config"] = {"name": "Cnn6", **config}
    else:
        state = build_model("Cnn6", **SMALL_FRONTEND, classes_num=5).state_dict()
        content = {"model": state, CARD_KEY: card_dict(frontend=config)}
    torch.save(content, path)

    def no_network(*args, **kwargs):
        raise AssertionError("a network was built from an unchecked config")

    monkeypatch.setattr(reader, "build_model", no_network)
    with pytest.raises(CardError, match=message):
        AudioTagger(path)
    assert tag_cli.main([str(tmp_path / "a.wav"), "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot load checkpoint {path}" in err and message.split(":")[0] in err


# ---- overrides and cards -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def carded_cnn6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 kHz, 32-mel Cnn6 in upstream's format with its card: what panns-export --format panns writes."""
    torch.manual_seed(0)
    model = build_model("Cnn6", **FRONTEND_16K_32MEL, classes_num=len(TINY_LABELS))
    card = ModelCard("Cnn6", dict(FRONTEND_16K_32MEL), [label["name"] for label in TINY_LABELS], "single-label", 16000)
    path = tmp_path_factory.mktemp("carded") / "weights.pth"
    torch.save({"model": model.state_dict(), CARD_KEY: card.with_artifact("panns").to_dict()}, path)
    return path


def test_overrides_that_contradict_the_card_are_errors_naming_both(carded_cnn6: Path) -> None:
    with pytest.raises(CheckpointLoadError, match="holds a 'Cnn6' model \\(its model card\\), but model name 'Cnn10'"):
        AudioTagger(carded_cnn6, model_name="Cnn10")
    with pytest.raises(CheckpointLoadError, match="its model card says mel_bins=32, but mel_bins=64 was given"):
        AudioTagger(carded_cnn6, frontend={"mel_bins": 64})
    tagger = AudioTagger(carded_cnn6, model_name="Cnn6", frontend={"mel_bins": 32})  # agreeing is fine
    assert tagger.labels == ["c0", "c1", "c2"] and tagger.window_seconds == 1.0 and not tagger.card.multilabel


def test_the_file_name_chooses_the_network_without_guessing(tmp_path: Path, monkeypatch, caplog) -> None:
    torch.manual_seed(0)
    path = tmp_path / "Cnn14_DecisionLevelMax_mAP=0.385.pth"
    torch.save({"model": build_model("Cnn14_DecisionLevelMax", **SMALL_FRONTEND, classes_num=5).state_dict()}, path)

    def no_guessing(state):
        raise AssertionError("every zoo network was built to guess")

    monkeypatch.setattr(reader, "best_matching_models", no_guessing)
    with caplog.at_level(logging.INFO, logger="panns_lightning.models.reader"):
        loaded = load_model(path, frontend=SMALL_FRONTEND)
    assert loaded.model_name == "Cnn14_DecisionLevelMax" and "from the file name" in caplog.text


# ---- what upstream's classes load ---------------------------------------------------------------
def test_the_notes_say_what_panns_inference_classes_really_load(reference_models) -> None:
    """panns_inference's Cnn14 takes the front end as arguments but hard-codes bn0 = BatchNorm2d(64)."""
    upstream = reference_models
    cases = {  # (our model, front end) → can upstream's class of that name load it?
        ("Cnn14", 64): True,
        ("Cnn14", 32): False,
    }
    for (name, mel_bins), loads in cases.items():
        frontend = dict(SMALL_FRONTEND, mel_bins=mel_bins)
        state = build_model(name, **frontend, classes_num=5).state_dict()
        theirs = getattr(upstream, name)(**frontend, classes_num=5)
        try:
            theirs.load_state_dict(state)
            loaded = True
        except RuntimeError as error:
            assert "bn0" in str(error)
            loaded = False
        notes = upstream_notes(name, frontend, 5, size=1000)
        assert loaded == loads and notes[0].startswith(
            "upstream's code loads it" if loads else "loads only in panns_lightning"
        )
    cnn6 = upstream_notes("Cnn6", FRONTEND_16K_32MEL, 12, size=1000)
    assert cnn6[0] == (
        "loads only in panns_lightning: upstream's Cnn6 hard-codes bn0 = BatchNorm2d(64) for 64 mel bins, this "
        "model has 32, so load_state_dict raises a size mismatch there"
    )
