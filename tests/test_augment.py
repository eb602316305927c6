"""Waveform augmentations and where mixup happens: arithmetic, shapes, and eval left untouched."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from panns_lightning.cli.config_schema import ConfigError, validate_train_config
from panns_lightning.cli.hydra_app import find_config_dir
from panns_lightning.models import do_mixup
from panns_lightning.training.augment import AugmentOptions, WaveformAugment, random_gain, random_roll
from panns_lightning.training.module import TaggingModule
from panns_lightning.training.speed import SpeedOptions

LABELS = [{"index": i, "mid": f"/m/{i}", "name": f"class{i}"} for i in range(3)]
MODEL = {
    "name": "Cnn6",
    "sample_rate": 16000,
    "window_size": 512,
    "hop_size": 160,
    "mel_bins": 64,
    "fmin": 50,
    "fmax": 8000,
}


def test_waveform_mixup_is_pairwise_and_matches_targets() -> None:
    waveform = torch.arange(4 * 5, dtype=torch.float32).reshape(4, 5)
    lam = torch.tensor([0.7, 0.3, 0.2, 0.8])
    mixed = do_mixup(waveform, lam)
    assert mixed.shape == (2, 5)
    torch.testing.assert_close(mixed[0], 0.7 * waveform[0] + 0.3 * waveform[1])
    torch.testing.assert_close(mixed[1], 0.2 * waveform[2] + 0.8 * waveform[3])
    target = torch.eye(4)[:, :3]
    torch.testing.assert_close(do_mixup(target, lam)[0], torch.tensor([0.7, 0.3, 0.0]))


def test_random_gain_scales_each_clip_within_range() -> None:
    torch.manual_seed(0)
    waveform = torch.ones(64, 10)
    out = random_gain(waveform, -6.0, 3.0)
    assert out.shape == waveform.shape
    gain_db = 20 * torch.log10(out[:, 0])
    assert gain_db.min() >= -6.0 - 1e-4 and gain_db.max() <= 3.0 + 1e-4
    assert gain_db.std() > 1.0  # one draw per clip, not one per batch
    torch.testing.assert_close(out, out[:, :1].expand_as(out))  # constant within a clip


def test_random_roll_is_a_per_clip_circular_shift() -> None:
    torch.manual_seed(0)
    waveform = torch.arange(100, dtype=torch.float32).repeat(32, 1)
    out = random_roll(waveform, 7)
    assert out.shape == waveform.shape
    shifts = set()
    for row in out:
        shift = int((row[0] - 0) % 100)  # value at position 0 tells how far the clip moved
        shift = shift - 100 if shift > 50 else shift
        torch.testing.assert_close(row, torch.roll(waveform[0], -shift))
        shifts.add(shift)
    assert max(abs(s) for s in shifts) <= 7 and len(shifts) > 3
    with pytest.raises(ValueError, match="batch, samples"):
        random_roll(torch.zeros(2, 1, 10), 3)


def test_augment_is_reproducible_from_the_global_seed() -> None:
    augment = WaveformAugment(gain_db=(-6.0, 6.0), max_shift_samples=50)
    waveform = torch.randn(4, 1000)
    torch.manual_seed(3)
    first = augment(waveform)
    torch.manual_seed(3)
    torch.testing.assert_close(augment(waveform), first)
    assert not torch.equal(first, waveform)
    assert not WaveformAugment().enabled and torch.equal(WaveformAugment()(waveform), waveform)


def _module(mixup_at: str) -> TaggingModule:
    torch.manual_seed(0)
    waveform = {
        "gain": {"enabled": True, "min_db": -6.0, "max_db": 6.0},
        "time_shift": {"enabled": True, "max_seconds": 0.25},
    }
    return TaggingModule(MODEL, LABELS, augment={"mixup": {"at": mixup_at}, "waveform": waveform})


def test_training_step_mixes_waveforms_before_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _module(mixup_at="waveform")
    module.train()
    seen = {}

    class SpyModel(torch.nn.Module):
        def forward(self, waveform, mixup_lambda=None):
            seen["shape"], seen["lambda"] = tuple(waveform.shape), mixup_lambda
            return {"clipwise_output": torch.full((waveform.shape[0], 3), 0.5, requires_grad=True)}

    monkeypatch.setattr(module, "model", SpyModel())
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    loss = module.training_step({"waveform": torch.randn(4, 16000), "target": torch.eye(4)[:, :3]}, 0)
    assert seen == {"shape": (2, 16000), "lambda": None}  # mixed already; the model must not mix again
    assert torch.isfinite(loss)


def test_eval_is_untouched_by_augmentation() -> None:
    augmented = _module(mixup_at="waveform")
    plain = TaggingModule(MODEL, LABELS, augment={"mixup": {"enabled": False}})
    plain.load_state_dict(augmented.state_dict())
    augmented.eval()
    plain.eval()
    waveform = torch.randn(3, 16000)
    with torch.no_grad():
        torch.testing.assert_close(augmented(waveform)["clipwise_output"], plain(waveform)["clipwise_output"])
        predicted = augmented.predict_step({"waveform": waveform, "key": ["a", "b", "c"]}, 0)
    torch.testing.assert_close(predicted["clipwise_output"], plain(waveform)["clipwise_output"])


def test_checkpoint_hparams_do_not_carry_compile() -> None:
    module = TaggingModule(MODEL, LABELS, speed=SpeedOptions(compile=True))
    assert "speed" not in module.hparams and module.speed.compile
    with pytest.raises(ValueError, match="augment.mixup.at"):
        TaggingModule(MODEL, LABELS, augment={"mixup": {"at": "spectrum"}})
    with pytest.raises(TypeError, match="plain dict"):
        TaggingModule(MODEL, LABELS, augment=AugmentOptions())  # type: ignore[arg-type]


def test_hparams_are_the_arguments_as_given_and_rebuild_the_same_module() -> None:
    augment = AugmentOptions.from_dict({"specaugment": {"time_drop_width": 16, "freq_drop_width": 4}}).to_dict()
    module = TaggingModule(MODEL, LABELS, augment=augment)
    assert module.hparams["augment"] == augment and module.hparams["model_config"] == MODEL
    assert module.model.spec_augmenter.time_dropper.drop_width == 16
    rebuilt = TaggingModule(**module.hparams)
    assert rebuilt.model.spec_augmenter.freq_dropper.drop_width == 4 and rebuilt.augment == module.augment


@pytest.mark.parametrize("preset", ["paper", "none", "strong"])
def test_presets_compose_and_validate(preset: str) -> None:
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = validate_train_config(compose("train", overrides=[f"augment={preset}"]))
    assert cfg.augment.mixup.at == "logmel"
    assert cfg.augment.waveform.gain.enabled == (preset == "strong")
    assert cfg.augment.specaugment.enabled == (preset != "none")


def test_bad_augment_values_are_named() -> None:
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["augment.mixup.at=spectrum"])
        with pytest.raises(ConfigError, match=r"augment\.mixup\.at"):
            validate_train_config(cfg)
        cfg = compose("train", overrides=["augment=strong", "augment.waveform.gain.min_db=10"])
        with pytest.raises(ConfigError, match=r"augment\.waveform\.gain"):
            validate_train_config(cfg)
