"""Facts with one home: the PANNs sample rate, SpecAugment's defaults, the monitored metric."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "panns_lightning"
RATE_HOME = SRC / "input_limits.py"


def _number_literals(path: Path, value: int, root: Path = SRC) -> list[str]:
    """``path:line`` of every number token in ``path`` equal to ``value`` (32000, 32_000, 32e3, ...)."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if token.type == tokenize.NUMBER and not token.string.endswith(("j", "J")):
            number = token.string.replace("_", "")
            literal = (
                float(number) if any(c in number for c in ".eE") and not number.startswith("0x") else int(number, 0)
            )
            if literal == value:
                found.append(f"{path.relative_to(root)}:{token.start[0]}")
    return found


def test_the_panns_sample_rate_is_written_once_in_src() -> None:
    from panns_lightning.input_limits import PANNS_SAMPLE_RATE

    assert PANNS_SAMPLE_RATE == 32000
    assert len(_number_literals(RATE_HOME, 32000)) == 1
    others = [hit for path in sorted(SRC.rglob("*.py")) if path != RATE_HOME for hit in _number_literals(path, 32000)]
    assert others == [], f"use input_limits.PANNS_SAMPLE_RATE instead of the literal 32000: {others}"


def test_the_literal_finder_sees_every_spelling(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("a = 32000\nb = 32_000\nc = 32e3\nd = '32000'\ne = 320000\n", encoding="utf-8")
    assert [hit.split(":")[1] for hit in _number_literals(probe, 32000, tmp_path)] == ["1", "2", "3"]


REPO = SRC.parents[1]


def test_spec_augment_defaults_have_one_python_home_that_the_yaml_repeats() -> None:
    import dataclasses
    import inspect

    import yaml

    from panns_lightning.models.frontend import SPEC_AUGMENT_DEFAULTS, build_spec_augmenter
    from panns_lightning.training.augment import SpecAugmentOptions

    options = {f.name: f.default for f in dataclasses.fields(SpecAugmentOptions) if f.name != "enabled"}
    assert options == SPEC_AUGMENT_DEFAULTS
    signature = inspect.signature(build_spec_augmenter).parameters
    assert {name: signature[name].default for name in SPEC_AUGMENT_DEFAULTS} == SPEC_AUGMENT_DEFAULTS
    for preset, enabled in (("paper", True), ("none", False)):
        written = yaml.safe_load((REPO / "conf" / "augment" / f"{preset}.yaml").read_text(encoding="utf-8"))
        assert written["specaugment"] == {"enabled": enabled, **SPEC_AUGMENT_DEFAULTS}, preset
    # The paper's stripes at 64 mel bins: 2 x < 64 frames, 2 x < 8 bins.
    augmenter = build_spec_augmenter(64)
    assert (augmenter.time_dropper.drop_width, augmenter.freq_dropper.drop_width) == (64, 8)


def _compose(overrides: list[str], hydra: bool = True):
    from hydra import compose, initialize_config_dir

    from panns_lightning.cli.hydra_app import find_config_dir

    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra)


def test_the_monitored_metric_is_one_key_that_checkpointing_and_sweeps_read() -> None:
    for overrides, expected in (
        ([], "val/mAP"),
        (["optimized_metric=val/loss"], "val/loss"),
        (["experiment=finetune_esc50"], "val/accuracy"),
    ):
        cfg = _compose(overrides)
        assert cfg.optimized_metric == expected
        assert cfg.callbacks.model_checkpoint.monitor == expected
        assert cfg.hydra.callbacks.sweep_report.metric == expected
    typed = []
    for path in [*sorted((REPO / "conf").rglob("*.yaml")), *sorted((REPO / "experiments").glob("*.yaml"))]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if "val/mAP" in code and not code.strip().startswith("optimized_metric:"):
                typed.append(f"{path.relative_to(REPO)}:{number}")
    assert typed == [], f"name the metric through ${{optimized_metric}}: {typed}"


def test_auto_is_only_a_fine_tuning_metric() -> None:
    import pytest

    from panns_lightning.cli.config_schema import ConfigError, validate_finetune_config, validate_train_config

    with pytest.raises(ConfigError, match="optimized_metric=auto is panns-finetune's"):
        validate_train_config(_compose(["experiment=demo", "optimized_metric=auto"], hydra=False))
    assert validate_finetune_config(_compose(["experiment=finetune_custom"], hydra=False)).optimized_metric == "auto"
