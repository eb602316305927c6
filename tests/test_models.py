"""The model zoo: output contract, checkpoint key layout, parameter counts, mixup, registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml

from panns_lightning.models import FRONTEND_DEFAULTS, FRONTEND_KEYS, build_model, do_mixup, list_models
from panns_lightning.models.wavegram import frame_rate_ratio, match_frames

CLASSES = 527
CONF_MODEL_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"

# Upstream PANNs (qiuqiangkong/audioset_tagging_cnn, pytorch/models.py) instantiated with each
# model's paper front end and 527 classes: (number of state_dict keys, sha256[:16] of the sorted
# "key:shape" lines, trainable parameters, all parameters incl. the frozen STFT/mel matrices).
# Any renamed, missing or re-shaped key breaks loading of the published checkpoints.
UPSTREAM_LAYOUT = {
    "Cnn10": (60, "fea21ba67caca477", 5219279, 6302735),
    "Cnn14": (84, "9509d81316d3ec38", 80753615, 81837071),
    "Cnn14_16k": (84, "cc5acfeaf77c7b31", 80753615, 81033231),
    "Cnn14_8k": (84, "bc5cac40e2b3fe08", 80753615, 80827919),
    "Cnn14_DecisionLevelAtt": (91, "2e9d19d143882174", 81834492, 82917948),
    "Cnn14_DecisionLevelAvg": (84, "9509d81316d3ec38", 80753615, 81837071),
    "Cnn14_DecisionLevelMax": (84, "9509d81316d3ec38", 80753615, 81837071),
    "Cnn14_emb128": (84, "3b4217e2f35177ae", 75807695, 76891151),
    "Cnn14_emb32": (84, "4e4e449f8ad17cfd", 75560399, 76643855),
    "Cnn14_emb512": (84, "ce32eda4d6ada343", 76796879, 77880335),
    "Cnn14_mel128": (84, "306dffb42da7376e", 80753743, 81870031),
    "Cnn14_mel32": (84, "ad9194015a686a31", 80753551, 81820591),
    "Cnn6": (36, "0e395a7974ed5f81", 4837455, 5920911),
    "DaiNet19": (130, "33205a3397a65cae", 4385807, 4385807),
    "LeeNet11": (58, "dd06a92e5426cbbb", 748367, 748367),
    "LeeNet24": (112, "f28c57d70ed5057e", 10003791, 10003791),
    "MobileNetV1": (174, "5298b5ef8402ac12", 4796303, 5879759),
    "MobileNetV2": (324, "5322f68f01c7d643", 4075343, 5158799),
    "Res1dNet31": (214, "a261ec5808479a18", 80464463, 80464463),
    "Res1dNet51": (334, "1c09f63552da5293", 106538063, 106538063),
    "ResNet22": (150, "db72cb2ec0864fe5", 63675087, 64758543),
    "ResNet38": (246, "af9f349d914bdc87", 73783247, 74866703),
    "ResNet54": (348, "3469e989b378babe", 104318159, 105401615),
    "Wavegram_Cnn14": (135, "2e80102481dea504", 80991759, 80991759),
    "Wavegram_Logmel128_Cnn14": (138, "ec4f76ae4bcd4eef", 81262735, 82379023),
    "Wavegram_Logmel_Cnn14": (138, "cdd4c0b5a358f900", 81065487, 82148943),
}

EMBEDDING_SIZE = {
    "Cnn6": 512,
    "Cnn10": 512,
    "Cnn14_emb512": 512,
    "Cnn14_emb128": 128,
    "Cnn14_emb32": 32,
    "MobileNetV1": 1024,
    "MobileNetV2": 1024,
    "LeeNet11": 512,
    "LeeNet24": 1024,
    "DaiNet19": 512,
}
SED_MODELS = {"Cnn14_DecisionLevelMax", "Cnn14_DecisionLevelAvg", "Cnn14_DecisionLevelAtt"}


@pytest.fixture(autouse=True)
def one_thread():
    """Other suites share the 2 CPU cores; one thread keeps these tests from hogging both."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build(name: str, classes_num: int = CLASSES, **extra) -> torch.nn.Module:
    return build_model(name, **FRONTEND_DEFAULTS[name], classes_num=classes_num, **extra)


def build_on_meta(name: str, classes_num: int = CLASSES) -> torch.nn.Module:
    with torch.device("meta"):
        return build(name, classes_num)


def layout(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def layout_fingerprint(model: torch.nn.Module) -> tuple[int, str]:
    items = sorted(layout(model).items())
    text = "\n".join(f"{key}:{shape}" for key, shape in items)
    return len(items), hashlib.sha256(text.encode()).hexdigest()[:16]


# --- Expected keys, written from the paper / upstream architecture description ---------------


def bn_keys(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    keys = {f"{prefix}.{field}": (channels,) for field in ("weight", "bias", "running_mean", "running_var")}
    keys[f"{prefix}.num_batches_tracked"] = ()
    return keys


def linear_keys(prefix: str, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (out_features, in_features), f"{prefix}.bias": (out_features,)}


def frontend_keys(window_size: int, mel_bins: int) -> dict[str, tuple[int, ...]]:
    bins = window_size // 2 + 1
    return {
        "spectrogram_extractor.stft.conv_real.weight": (bins, 1, window_size),
        "spectrogram_extractor.stft.conv_imag.weight": (bins, 1, window_size),
        "logmel_extractor.melW": (bins, mel_bins),
        **bn_keys("bn0", mel_bins),
    }


def conv_stack_keys(prefix: str, channels: list[int], kernel: tuple[int, ...], layers: int) -> dict:
    """``prefix{i}.conv{j}`` / ``bn{j}`` for blocks i = 1.. mapping channels[i-1] → channels[i]."""
    keys: dict[str, tuple[int, ...]] = {}
    for index, (in_ch, out_ch) in enumerate(zip(channels[:-1], channels[1:]), 1):
        for layer in range(1, layers + 1):
            keys[f"{prefix}{index}.conv{layer}.weight"] = (out_ch, in_ch if layer == 1 else out_ch, *kernel)
            keys.update(bn_keys(f"{prefix}{index}.bn{layer}", out_ch))
    return keys


def wavegram_keys(folded_bins: int) -> dict[str, tuple[int, ...]]:
    keys = {"pre_conv0.weight": (64, 1, 11), **bn_keys("pre_bn0", 64)}
    keys.update(conv_stack_keys("pre_block", [64, 64, 128, 4 * folded_bins], (3,), layers=2))
    keys["pre_block4.conv1.weight"] = (64, 4, 3, 3)
    keys["pre_block4.conv2.weight"] = (64, 64, 3, 3)
    keys.update(bn_keys("pre_block4.bn1", 64))
    keys.update(bn_keys("pre_block4.bn2", 64))
    return keys


def expected_cnn14(window_size=1024, mel_bins=64, embedding=2048, block2_in=64) -> dict:
    keys = frontend_keys(window_size, mel_bins)
    keys.update(conv_stack_keys("conv_block", [1, 64, 128, 256, 512, 1024, 2048], (3, 3), layers=2))
    keys["conv_block2.conv1.weight"] = (128, block2_in, 3, 3)
    keys.update(linear_keys("fc1", embedding, 2048))
    keys.update(linear_keys("fc_audioset", CLASSES, embedding))
    return keys


def expected_att() -> dict:
    keys = expected_cnn14()
    del keys["fc_audioset.weight"], keys["fc_audioset.bias"]
    for conv in ("att", "cla"):
        keys[f"att_block.{conv}.weight"] = (CLASSES, 2048, 1)
        keys[f"att_block.{conv}.bias"] = (CLASSES,)
    keys.update(bn_keys("att_block.bn_att", CLASSES))
    return keys


def expected_small_cnn(kernel: int, layers: int) -> dict:
    keys = frontend_keys(1024, 64)
    keys.update(conv_stack_keys("conv_block", [1, 64, 128, 256, 512], (kernel, kernel), layers))
    keys.update(linear_keys("fc1", 512, 512))
    keys.update(linear_keys("fc_audioset", CLASSES, 512))
    return keys


def expected_wavegram_logmel(mel_bins: int) -> dict:
    return {**expected_cnn14(mel_bins=mel_bins, block2_in=128), **wavegram_keys(mel_bins // 2)}


def expected_wavegram_cnn14() -> dict:
    keys = {**expected_cnn14(), **wavegram_keys(32)}
    for key in list(keys):
        if key.startswith(("spectrogram_extractor.", "logmel_extractor.")):
            del keys[key]
    return keys


def expected_leenet(channels: list[int], layers: int, embedding: int) -> dict:
    keys = conv_stack_keys("conv_block", [1, *channels], (3,), layers)
    keys.update(linear_keys("fc1", embedding, channels[-1]))
    keys.update(linear_keys("fc_audioset", CLASSES, embedding))
    return keys


def expected_dainet() -> dict:
    keys = {"conv0.weight": (64, 1, 80), **bn_keys("bn0", 64)}
    for index, (in_ch, out_ch) in enumerate([(64, 64), (64, 128), (128, 256), (256, 512)], 1):
        for layer in range(1, 5):
            keys[f"conv_block{index}.conv{layer}.weight"] = (out_ch, in_ch if layer == 1 else out_ch, 3)
            keys.update(bn_keys(f"conv_block{index}.bn{layer}", out_ch))
        keys[f"conv_block{index}.downsample.weight"] = (out_ch, in_ch, 1)
        keys.update(bn_keys(f"conv_block{index}.bn_downsample", out_ch))
    keys.update(linear_keys("fc1", 512, 512))
    keys.update(linear_keys("fc_audioset", CLASSES, 512))
    return keys


EXPECTED_KEYS = {
    "Cnn6": lambda: expected_small_cnn(kernel=5, layers=1),
    "Cnn10": lambda: expected_small_cnn(kernel=3, layers=2),
    "Cnn14": expected_cnn14,
    "Cnn14_16k": lambda: expected_cnn14(window_size=512),
    "Cnn14_8k": lambda: expected_cnn14(window_size=256),
    "Cnn14_mel32": lambda: expected_cnn14(mel_bins=32),
    "Cnn14_mel128": lambda: expected_cnn14(mel_bins=128),
    "Cnn14_emb512": lambda: expected_cnn14(embedding=512),
    "Cnn14_emb128": lambda: expected_cnn14(embedding=128),
    "Cnn14_emb32": lambda: expected_cnn14(embedding=32),
    "Cnn14_DecisionLevelMax": expected_cnn14,
    "Cnn14_DecisionLevelAvg": expected_cnn14,
    "Cnn14_DecisionLevelAtt": expected_att,
    "Wavegram_Logmel_Cnn14": lambda: expected_wavegram_logmel(64),
    "Wavegram_Logmel128_Cnn14": lambda: expected_wavegram_logmel(128),
    "Wavegram_Cnn14": expected_wavegram_cnn14,
    "LeeNet11": lambda: expected_leenet([64, 64, 64, 128, 128, 128, 128, 128, 256], 1, 512),
    "LeeNet24": lambda: expected_leenet([64, 96, 128, 128, 256, 256, 512, 512, 1024], 2, 1024),
    "DaiNet19": expected_dainet,
}


# --- Tests ----------------------------------------------------------------------------------


def test_zoo_is_complete():
    assert set(list_models()) == set(UPSTREAM_LAYOUT)
    assert len(list_models()) == 26


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_state_dict_keys_and_shapes_follow_the_architecture(name):
    expected = EXPECTED_KEYS[name]()
    actual = layout(build_on_meta(name))
    assert sorted(set(expected) - set(actual)) == [], "missing keys"
    assert sorted(set(actual) - set(expected)) == [], "unexpected keys"
    assert {k: v for k, v in actual.items() if expected[k] != v} == {}, "shapes differ"


@pytest.mark.parametrize("name", sorted(UPSTREAM_LAYOUT))
def test_zoo_model_forward_layout_and_parameter_count(name):
    """One build per model (the slow part) checks output contract, key layout and size."""
    num_keys, fingerprint, trainable, total = UPSTREAM_LAYOUT[name]
    model = build(name, classes_num=CLASSES).eval()

    assert layout_fingerprint(model) == (num_keys, fingerprint)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    assert sum(p.numel() for p in model.parameters()) == total

    frontend = FRONTEND_DEFAULTS[name]
    waveform = torch.randn(2, frontend["sample_rate"]) * 0.1  # 1 s
    with torch.no_grad():
        output = model(waveform)
    upstream_keys = {"clipwise_output", "embedding"} | ({"framewise_output"} if name in SED_MODELS else set())
    # Upstream's outputs, plus fp32 logits wherever the clip output is their sigmoid.
    has_logits = name not in ("Cnn14_DecisionLevelAvg", "Cnn14_DecisionLevelAtt")
    assert set(output) == upstream_keys | ({"logits"} if has_logits else set())
    if has_logits:
        assert output["logits"].dtype == torch.float32
        torch.testing.assert_close(torch.sigmoid(output["logits"]), output["clipwise_output"], rtol=0, atol=0)
    clipwise = output["clipwise_output"]
    assert clipwise.shape == (2, CLASSES)
    assert torch.isfinite(clipwise).all() and (clipwise >= 0).all() and (clipwise <= 1).all()
    assert output["embedding"].shape == (2, EMBEDDING_SIZE.get(name, 2048))
    if name in SED_MODELS:
        frames = frontend["sample_rate"] // frontend["hop_size"] + 1  # centred STFT
        assert output["framewise_output"].shape == (2, frames, CLASSES)


@pytest.mark.parametrize(
    "name, paper_millions",
    [("Cnn14", 80.8), ("Wavegram_Logmel_Cnn14", 81.1), ("Cnn6", 4.8), ("Cnn10", 5.2)],
)
def test_parameter_count_matches_paper(name, paper_millions):
    """The paper prints millions with one decimal, so the true count lies within ±0.05 M.

    The paper counts trainable weights only; the frozen STFT and mel matrices that torchlibrosa
    registers as parameters (1.08 M at 32 kHz / window 1024) are excluded here.
    """
    model = build_on_meta(name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert abs(trainable / 1e6 - paper_millions) <= 0.05
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen == 2 * 513 * 1024 + 513 * 64


def test_do_mixup_is_pairwise_weighted_sum():
    x = torch.randn(6, 3, 5)
    lam = torch.tensor([0.2, 0.8, 1.0, 0.0, 0.6, 0.4])
    mixed = do_mixup(x, lam)
    assert mixed.shape == (3, 3, 5)
    for row in range(3):
        expected = x[2 * row] * lam[2 * row] + x[2 * row + 1] * lam[2 * row + 1]
        torch.testing.assert_close(mixed[row], expected)
    torch.testing.assert_close(mixed[1], x[2])  # lambda (1, 0) keeps the first clip


def test_do_mixup_rejects_bad_shapes():
    with pytest.raises(ValueError, match="even"):
        do_mixup(torch.randn(3, 4), torch.ones(3))
    with pytest.raises(ValueError, match=r"\[4\]"):
        do_mixup(torch.randn(4, 4), torch.ones(2))


def test_frontend_mixes_normalised_logmel_after_specaugment():
    """Mixup acts on the bn0-normalised (and SpecAugmented) log-mel, in training mode only."""
    model = build("Cnn6", classes_num=3).train()
    model.spec_augmenter = torch.nn.Identity()  # make the training-mode features deterministic
    waveform = torch.randn(4, 8000)
    lam = torch.tensor([0.3, 0.7, 0.9, 0.1])
    with torch.no_grad():
        plain = model.logmel(waveform)
        mixed = model.logmel(waveform, lam)
    assert mixed.shape[0] == 2
    torch.testing.assert_close(mixed, do_mixup(plain, lam))
    assert plain.mean(dim=(0, 1, 2)).abs().max() < 1e-4  # bn0 ran (batch statistics in training)


@pytest.mark.parametrize("name", ["Cnn6", "LeeNet11"])
def test_training_forward_with_mixup_halves_the_batch(name):
    model = build(name, classes_num=5).train()
    lam = torch.tensor([0.3, 0.7, 0.9, 0.1])
    output = model(torch.randn(4, 32000) * 0.1, lam)
    assert output["clipwise_output"].shape == (2, 5)
    assert output["embedding"].shape[0] == 2
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(4, 32000), lam)["clipwise_output"].shape == (4, 5)  # eval ignores mixup


def test_wavegram_logmel_runs_at_16khz_hop_160():
    """Upstream concatenation fails when hop != 320; here the Wavegram is matched to log-mel frames."""
    model = build_model("Wavegram_Logmel_Cnn14", **FRONTEND_DEFAULTS["Cnn14_16k"], classes_num=4).train()
    lam = torch.tensor([0.5, 0.5, 0.2, 0.8])
    output = model(torch.randn(4, 16000) * 0.1, lam)
    assert output["clipwise_output"].shape == (2, 4)


def test_match_frames_repeats_then_crops_or_pads():
    features = torch.arange(5.0).reshape(1, 1, 5, 1)
    assert torch.equal(match_frames(features, 5), features)
    assert frame_rate_ratio(160) == (2, 1) and frame_rate_ratio(320) == (1, 1) and frame_rate_ratio(640) == (1, 2)
    assert match_frames(features, 11, *frame_rate_ratio(160)).flatten().tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4]
    assert match_frames(features, 4).flatten().tolist() == [0, 1, 2, 3]
    assert match_frames(features, 6).flatten().tolist() == [0, 1, 2, 3, 4, 4]
    eight = torch.arange(8.0).reshape(1, 1, 8, 1)
    assert match_frames(eight, 4, *frame_rate_ratio(640)).flatten().tolist() == [0.5, 2.5, 4.5, 6.5]


def test_spec_augment_stripes_are_constructor_arguments():
    model = build("Cnn6", classes_num=2, time_drop_width=16, freq_stripes_num=3)
    assert model.spec_augmenter.time_dropper.drop_width == 16
    assert model.spec_augmenter.freq_dropper.stripes_num == 3
    assert build("Cnn14_mel128", classes_num=2).spec_augmenter.freq_dropper.drop_width == 16  # mel_bins // 8


def test_unknown_model_name_lists_valid_names_and_suggests():
    with pytest.raises(ValueError) as error:
        build_model("Cnn41", **FRONTEND_DEFAULTS["Cnn14"], classes_num=2)
    message = str(error.value)
    assert "'Cnn41'" in message and "Did you mean 'Cnn14'" in message
    assert all(name in message for name in list_models())


def test_frontend_defaults_follow_the_paper():
    assert FRONTEND_DEFAULTS["Cnn14"] == dict(
        sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000
    )
    assert FRONTEND_DEFAULTS["Cnn14_16k"] == dict(
        sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000
    )
    assert FRONTEND_DEFAULTS["Cnn14_8k"] == dict(
        sample_rate=8000, window_size=256, hop_size=80, mel_bins=64, fmin=50, fmax=4000
    )
    assert FRONTEND_DEFAULTS["Cnn14_mel32"]["mel_bins"] == 32
    assert FRONTEND_DEFAULTS["Cnn14_mel128"]["mel_bins"] == 128
    assert FRONTEND_DEFAULTS["Wavegram_Logmel128_Cnn14"]["mel_bins"] == 128


@pytest.mark.parametrize("name", sorted(UPSTREAM_LAYOUT))
def test_model_config_matches_frontend_table(name):
    config = yaml.safe_load((CONF_MODEL_DIR / f"{name}.yaml").read_text())
    assert list(config) == ["name", *FRONTEND_KEYS]
    assert config == {"name": name, **FRONTEND_DEFAULTS[name]}


def test_no_stray_model_configs():
    assert sorted(path.stem for path in CONF_MODEL_DIR.glob("*.yaml")) == list_models()
