"""The shipped recipes train what the paper trained, checked where it counts: the module that
``panns-train`` / ``panns-finetune`` build from their composed config, not the constructors.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

from panns_lightning.cli.config_schema import validate_train_config
from panns_lightning.cli.hydra_app import find_config_dir
from panns_lightning.models.mixup import do_mixup

LABELS = [{"index": i, "mid": f"/m/{i}", "name": f"c{i}"} for i in range(4)]


def composed(*overrides: str):
    """panns-train's validated config (panns-finetune's schema for the fine-tuning experiments)."""
    from panns_lightning.cli.config_schema import validate_finetune_config

    finetuning = any(o.startswith("experiment=finetune") for o in overrides)
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return validate_finetune_config(cfg) if finetuning else validate_train_config(cfg)


def stub_data(sample_rate: int = 32000, multilabel: bool = True) -> SimpleNamespace:
    """What build_module reads from the DataModule (the shards' rate and labels)."""
    return SimpleNamespace(sample_rate=sample_rate, labels=LABELS, multilabel=multilabel)


class Recorder(torch.nn.Module):
    """Wraps the real network and remembers what the training step handed it."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.waveform: torch.Tensor | None = None
        self.mixup_lambda: torch.Tensor | None = None

    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.waveform, self.mixup_lambda = waveform, mixup_lambda
        return self.network(waveform, mixup_lambda)


def built(*overrides: str):
    from panns_lightning.cli.build import build_module

    cfg = composed(*overrides)
    return build_module(cfg, stub_data(int(cfg.model.sample_rate)))


@pytest.mark.parametrize(
    "model, width", [("Cnn14", 8), ("Cnn14_mel32", 4), ("Cnn14_mel128", 16), ("Wavegram_Logmel128_Cnn14", 16)]
)
def test_specaugment_frequency_stripes_follow_each_models_mel_bins(model: str, width: int) -> None:
    module = built(f"model={model}", "augment=paper")
    assert module.model.spec_augmenter.freq_dropper.drop_width == width
    assert module.model.spec_augmenter.time_dropper.drop_width == 64


def test_an_explicit_frequency_stripe_width_overrides_every_model() -> None:
    module = built("model=Cnn14_mel128", "augment=paper", "augment.specaugment.freq_drop_width=5")
    assert module.model.spec_augmenter.freq_dropper.drop_width == 5


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("experiment=pretrain_audioset",),
        ("experiment=finetune_esc50",),
        ("experiment=finetune_gtzan",),
        ("experiment=finetune_ravdess",),
        ("experiment=finetune_custom",),
    ],
)
def test_paper_presets_read_64_clips_for_32_mixed_examples(overrides: tuple[str, ...]) -> None:
    cfg = composed(*overrides)
    assert cfg.augment.mixup.enabled
    assert cfg.data.batch_size == 64  # mixup pairs them: the paper's batch of 32


# A Cnn6 small enough for a few CPU steps, as panns-train overrides.
TINY_MODEL = (
    "model=Cnn6",
    "model.sample_rate=8000",
    "model.window_size=256",
    "model.hop_size=80",
    "model.mel_bins=32",
    "model.fmax=4000",
)


def test_training_step_hands_the_mixup_lambda_to_the_model_and_mixes_targets_alike(monkeypatch) -> None:
    import panns_lightning.training.module as module_file

    module = built(
        *TINY_MODEL,
        "augment=paper",
        "augment.specaugment.enabled=false",
    )
    lam = torch.tensor([0.9, 0.1, 0.3, 0.7])
    monkeypatch.setattr(module_file, "sample_mixup_lambda", lambda batch, alpha: lam.clone())
    network = module.model
    module.model = seen = Recorder(network)
    target = torch.eye(4)
    batch = {"waveform": torch.randn(4, 8000) * 0.1, "target": target, "key": ["a", "b", "c", "d"]}
    torch.manual_seed(0)
    loss = module.training_step(batch, 0)
    assert torch.equal(seen.mixup_lambda, lam) and seen.waveform.shape[0] == 4  # mixed inside the model
    torch.manual_seed(0)
    expected = module.loss(network(batch["waveform"], lam), do_mixup(target, lam))
    torch.testing.assert_close(loss, expected)
    mixed = do_mixup(target, lam)
    torch.testing.assert_close(mixed[0], torch.tensor([0.9, 0.1, 0.0, 0.0]))  # row i = 2i·λ + (2i+1)·λ'


def test_waveform_mixup_mixes_clips_before_the_model_with_the_same_weights(monkeypatch) -> None:
    import panns_lightning.training.module as module_file

    module = built(
        *TINY_MODEL,
        "augment=paper",
        "augment.mixup.at=waveform",
    )
    lam = torch.tensor([0.25, 0.75, 0.5, 0.5])
    monkeypatch.setattr(module_file, "sample_mixup_lambda", lambda batch, alpha: lam.clone())
    module.model = seen = Recorder(module.model)
    waveform = torch.randn(4, 8000) * 0.1
    module.training_step({"waveform": waveform, "target": torch.eye(4), "key": list("abcd")}, 0)
    assert seen.mixup_lambda is None
    torch.testing.assert_close(seen.waveform, do_mixup(waveform, lam))


def test_fine_tuning_head_reads_the_dropped_embedding_like_upstreams_transfer_model() -> None:
    from panns_lightning.cli.build import build_finetune_module

    cfg = composed("experiment=finetune_esc50")
    module = build_finetune_module(cfg, stub_data(32000, multilabel=False))
    torch.manual_seed(0)
    output = module.model.train()(torch.randn(4, 32000) * 0.1)
    torch.testing.assert_close(output["logits"], module.model.fc_audioset(output["embedding"]))

    pretraining = built("augment=paper")  # the AudioSet tagger reads the undropped activations
    torch.manual_seed(0)
    output = pretraining.model.train()(torch.randn(4, 32000) * 0.1)
    assert not torch.allclose(output["logits"], pretraining.model.fc_audioset(output["embedding"]))


@pytest.mark.parametrize(
    "overrides, preset",
    [
        ((), "cpu"),
        (("trainer=cpu",), "cpu"),
        (("trainer=gpu",), "gpu"),
        (("trainer=ddp",), "gpu"),
        (("trainer=ddp_multinode",), "gpu"),
        (("experiment=pretrain_audioset",), "gpu"),
        (("experiment=pretrain_audioset", "trainer=ddp"), "gpu"),
        (("trainer=gpu", "speed=reference"), "reference"),
    ],
)
def test_speed_presets_follow_the_trainer(overrides: tuple[str, ...], preset: str) -> None:
    from omegaconf import OmegaConf

    cfg = composed(*overrides)
    expected = OmegaConf.load(f"{find_config_dir()}/speed/{preset}.yaml")
    for key, value in expected.items():
        if key != "defaults":
            assert cfg.speed[key] == value, (key, overrides)
    if preset == "gpu":
        assert cfg.trainer.precision == "bf16-mixed"


def test_sync_free_without_the_fused_optimizer_is_a_config_error_naming_both_keys() -> None:
    from panns_lightning.cli.config_schema import ConfigError

    with pytest.raises(ConfigError, match=r"speed\.sync_free needs speed\.fused_adam"):
        built("speed=cpu", "speed.fused_adam=false")


def test_cpu_precision_is_bf16_only_where_the_cpu_has_native_bf16(tmp_path) -> None:
    from panns_lightning.cli.hydra_app import cpu_precision, native_bf16_flag

    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert native_bf16_flag(str(with_bf16)) == "avx512_bf16"
    assert native_bf16_flag(str(without)) is None
    assert native_bf16_flag(str(tmp_path / "absent")) is None
    assert composed("experiment=demo", "trainer.precision=${cpu_precision:}").trainer.precision == cpu_precision()
    assert cpu_precision() in ("bf16-mixed", "32-true")
