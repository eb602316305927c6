"""Acceptance (issue 19, cases 5 and 8's ``model.fmax``, and the config part of "one line"):
values are checked where they enter.

Before, ``data.batch_size=0``, ``optim.lr=nan``, ``data.num_workers=-1``, ``model.mel_bins=0``,
``model.hop_size=0``, ``data.error_budget=2`` and ``trainer.precision=banana`` ended in a raw
traceback somewhere inside the run, ``trainer.max_steps=-1`` or ``1e30`` trained until killed
and ``model.fmax=-5`` trained on empty mel filters. Each is now a :class:`ConfigError` from the
schema's checks, one line naming the key, what was expected and what was found.
"""

from __future__ import annotations

import subprocess

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from panns_lightning.cli.config_schema import ConfigError, validate_finetune_config, validate_train_config
from panns_lightning.cli.hydra_app import find_config_dir
from train_fixtures import BIN, REPO

CASES = [
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("data.steps_per_epoch=0", "data.steps_per_epoch must be >= 1, got 0"),
    ("data.num_workers=-1", "data.num_workers must be >= 0, got -1"),
    ("data.error_budget=2", "data.error_budget is a fraction of clips in [0, 1], got 2.0"),
    ("data.error_budget=nan", "data.error_budget is a fraction of clips in [0, 1], got nan"),
    ("data.shuffle_buffer=0", "data.shuffle_buffer must be >= 1, got 0"),
    ("data.repeat_scale=inf", "data.repeat_scale must be a finite number > 0, got inf"),
    ("data.http_deadline=0", "data.http_deadline must be a finite number > 0, got 0.0"),
    ("data.max_member_bytes=0", "data.max_member_bytes must be >= 1, got 0"),
    ("data.train_crop_seconds=-1", "data.train_crop_seconds must be a finite number > 0 or null, got -1.0"),
    ("model.mel_bins=0", "model.mel_bins must be an integer in 1..513 (window_size // 2 + 1 frequency bins), got 0"),
    ("model.mel_bins=10000000", "model.mel_bins must be an integer in 1..513"),
    ("model.hop_size=0", "model.hop_size must be an integer in 1..window_size=1024, got 0"),
    ("model.window_size=0", "model.window_size must be an integer in 1..8192, got 0"),
    ("model.sample_rate=0", "model.sample_rate must be an integer in 1..384000, got 0"),
    ("model.fmax=-5", "model.fmax must be a number in (50, sample_rate / 2 = 16000] Hz (above fmin), got -5"),
    ("model.fmax=20000", "model.fmax must be a number in (50, sample_rate / 2 = 16000] Hz (above fmin), got 20000"),
    ("model.fmin=-1", "model.fmin must be a number in [0, sample_rate / 2 = 16000) Hz, got -1"),
    ("optim.lr=nan", "optim.lr must be a finite number > 0, got nan"),
    ("optim.lr=0", "optim.lr must be a finite number > 0, got 0.0"),
    ("optim.weight_decay=-1", "optim.weight_decay must be a finite number >= 0, got -1.0"),
    ("optim.betas=[0.9,1.5]", "optim.betas must be two numbers in [0, 1), got [0.9, 1.5]"),
    ("trainer.precision=banana", "trainer.precision must be one of transformer-engine, "),
    ("trainer.max_steps=-1", "trainer.max_steps must be an integer in 1..1000000000 (the run's length; "),
    ("trainer.max_steps=0", "trainer.max_steps must be an integer in 1..1000000000"),
    ("trainer.max_steps=1e30", "trainer.max_steps must be an integer in 1..1000000000 (the run's length; with "),
    ("trainer.max_epochs=0", "trainer.max_epochs must be -1 (no limit), null or an integer in 1..1000000, got 0"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches must be an integer >= 1, got 0"),
]


def composed(*overrides: str, config: str = "train") -> DictConfig:
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        return compose(config, overrides=list(overrides))


@pytest.fixture(scope="module")
def default_config() -> DictConfig:
    return composed()


def overridden(base: DictConfig, override: str) -> DictConfig:
    """``base`` with one command-line override applied as Hydra parses it (faster than composing again)."""
    parsed = OverridesParser.create().parse_override(override)
    cfg = base.copy()
    OmegaConf.update(cfg, parsed.key_or_group, parsed.value(), merge=True)
    return cfg


@pytest.mark.parametrize(("override", "expected"), CASES, ids=[case[0] for case in CASES])
def test_a_value_out_of_range_is_one_line_naming_the_key(
    default_config: DictConfig, override: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_train_config(overridden(default_config, override))
    message = str(caught.value)
    assert message.startswith(expected) and "\n" not in message


def test_finetuning_checks_the_same_values() -> None:
    with pytest.raises(ConfigError, match=r"^optim\.lr must be a finite number > 0, got nan$"):
        validate_finetune_config(composed("experiment=finetune_esc50", "optim.lr=nan"))


def test_every_shipped_recipe_passes_the_checks() -> None:
    for experiment in ("demo", "pretrain_audioset", "finetune_custom", "finetune_gtzan", "finetune_ravdess"):
        cfg = composed(f"experiment={experiment}")
        validate_finetune_config(cfg) if experiment.startswith("finetune") else validate_train_config(cfg)
    for model in ("Cnn14_8k", "Cnn14_mel128"):  # fmax at Nyquist; 128 mel bins
        validate_train_config(composed(f"model={model}"))


def test_several_problems_are_counted_in_the_one_line(default_config: DictConfig) -> None:
    cfg = default_config
    for override in ("data.batch_size=0", "optim.lr=nan", "trainer.max_steps=-1"):
        cfg = overridden(cfg, override)
    with pytest.raises(ConfigError, match=r"^data\.batch_size must be >= 1, got 0 \(and 2 more problem\(s\)\)$"):
        validate_train_config(cfg)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (dict(sample_rate=8000, window_size=256, hop_size=80, mel_bins=32, fmin=50, fmax=4000), None),
        (dict(sample_rate=8000, window_size=256, hop_size=80, mel_bins=32, fmin=50, fmax=4001), "fmax"),
        (dict(sample_rate=8000, window_size=256, hop_size=80, mel_bins=32, fmin=4000, fmax=4000), "fmin"),
        (dict(sample_rate=8000, window_size=256, hop_size=80, mel_bins=32, fmin=50, fmax=float("nan")), "fmax"),
        (dict(sample_rate=8000, window_size=256, hop_size=80, mel_bins=130, fmin=50, fmax=4000), "mel_bins"),
        (dict(sample_rate=8000, window_size=256, hop_size=257, mel_bins=32, fmin=50, fmax=4000), "hop_size"),
        (dict(sample_rate=1e7, window_size=256, hop_size=80, mel_bins=32, fmin=50, fmax=4000), "sample_rate"),
        (dict(sample_rate=8000, window_size=True, hop_size=80, mel_bins=32, fmin=50, fmax=4000), "window_size"),
    ],
)
def test_frontend_problems_name_the_setting(settings: dict, problem: str | None) -> None:
    """The front-end check a config and a checkpoint's model config can share."""
    from panns_lightning.models import frontend_problems

    found = frontend_problems(**settings)
    assert [line.split(" ", 1)[0] for line in found] == ([problem] if problem else [])


@pytest.mark.slow
def test_the_cli_prints_one_line_not_a_traceback(tmp_path) -> None:  # noqa: ANN001
    result = subprocess.run(
        [str(BIN / "panns-train"), "experiment=demo", "trainer.max_steps=-1", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "panns-train: trainer.max_steps must be an integer in 1..1000000000 (the run's length; with max_epochs it "
        "stops at whichever comes first), got -1"
    ]


def test_the_exact_sampler_refuses_pipe_shards_before_any_work(default_config: DictConfig) -> None:
    cfg = overridden(overridden(default_config, "data.sampler=panns"), "data.train_urls='pipe:cat shard-{0..3}.tar'")
    with pytest.raises(
        ConfigError, match=r"^data\.train_urls: data\.sampler=panns reads clips at random, which a pipe"
    ):
        validate_train_config(cfg)
    with pytest.raises(ConfigError, match=r"^data\.sampler must be one of \['stream', 'panns'\]"):
        validate_train_config(overridden(default_config, "data.sampler=exact"))
