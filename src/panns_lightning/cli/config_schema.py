"""Typed schemas of panns-train's, panns-finetune's and panns-eval's configs, all in this file: a
typo'd key or a wrong type fails before any work starts.

Hydra already refuses command-line overrides of keys that do not exist; this schema also catches
typos inside YAML files (experiments, group presets), which Hydra would silently merge.
Groups whose keys are a library's own arguments (trainer, logger, callbacks) are checked by that
library when they are instantiated. Where a library class already lists a group's options, the
schema is that class: ``data`` extends :class:`~panns_lightning.data.options.StreamOptions` and
``augment`` is :class:`~panns_lightning.training.augment.AugmentOptions`. Checks against the
machine (paths exist, GPUs are there) live in :mod:`panns_lightning.cli.preflight`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from panns_lightning.data.options import StreamOptions, random_access_problem
from panns_lightning.input_limits import PANNS_SAMPLE_RATE
from panns_lightning.models.frontend import STFT_IMPLEMENTATIONS, frontend_problems
from panns_lightning.training.augment import AugmentOptions
from panns_lightning.training.speed import SpeedOptions


@dataclass
class ShardSetsConfig:
    """Where the train / val / test shard sets are (a directory holding manifest.json each, or its http(s) URL)."""

    train_dir: Optional[str] = None
    val_dir: Optional[str] = None
    test_dir: Optional[str] = None
    # Read the shards from elsewhere (brace pattern, pipe: command or URL); the manifest still comes from *_dir.
    train_urls: Optional[str] = None
    val_urls: Optional[str] = None
    test_urls: Optional[str] = None


@dataclass
class DataConfig(StreamOptions, ShardSetsConfig):
    """The data group: where the shard sets are, plus every stream option (data/options.py)."""

    # Train on a random crop of this many seconds of each stored clip (null: the whole clip).
    train_crop_seconds: Optional[float] = None


@dataclass
class ModelConfig:
    name: str = "Cnn14"
    sample_rate: int = PANNS_SAMPLE_RATE
    window_size: int = 1024
    hop_size: int = 320
    mel_bins: int = 64
    fmin: int = 50
    fmax: int = 14000


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = True
    warmup_steps: int = 0
    # Stop after this many consecutive steps with a non-finite loss or gradient (each is skipped).
    max_nonfinite_steps: int = 5


@dataclass
class SpeedConfig:
    """How fast a run goes, never what it trains (conf/speed/; docs/speed.md)."""

    # "conv": torchlibrosa's STFT as a convolution (upstream); "fft": torch.stft, same log-mel.
    stft: str = "conv"
    # Wavegram models: run the 1-D convolutions as 1 x k 2-D ones (channels-last capable).
    wave_conv2d: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    fused_adam: bool = False
    # No host sync in the training step (needs fused_adam: non-finite steps are skipped on the device).
    sync_free: bool = False
    # Train batches of int16 shards stay int16 until the device (half the bytes to move).
    int16_batches: bool = False
    pin_memory: bool = False


@dataclass
class TrainConfig:
    task_name: str = "train"
    seed: int = 1234
    # What best.ckpt, sweepers and sweep reports go by; conf/train.yaml holds its value (one home).
    optimized_metric: str = MISSING
    # A checkpoint path, "auto" (<run dir>/checkpoints/last.ckpt when it exists) or null.
    ckpt_path: Optional[str] = None
    test: bool = True
    # Print the composed config, world size, first shards per rank and the epoch time estimate; train nothing.
    dry_run: bool = False
    paths: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    optim: OptimConfig = field(default_factory=OptimConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: Optional[dict[str, Any]] = field(default_factory=dict)
    callbacks: Optional[dict[str, Any]] = field(default_factory=dict)


@dataclass
class FinetuneConfig:
    """panns-finetune's ``finetune`` keys (cli/finetune.py)."""

    # The pretrained weights (a published PANNs file, a state_dict or one of our checkpoints); null: from scratch.
    checkpoint: Optional[str] = None
    # full | linear_probe | partial (with freeze_until: the last frozen top-level layer).
    mode: str = "full"
    freeze_until: Optional[str] = None
    # < 1: each trainable layer gets lr * layer_decay^depth, depth counted from the head.
    layer_decay: float = 1.0
    # The new head reads the embedding after the backbone's last dropout (p = 0.5), as upstream's
    # transfer models; false: the undropped activations, as the AudioSet tagger.
    head_on_dropped_embedding: bool = True
    # Take the model name and front end from one of our Lightning checkpoints instead of `model`.
    backbone_from_checkpoint: bool = True
    # last: the weights at the end of training; best: the best validation checkpoint; auto: best
    # when validation has clips of its own (a val split), last when it is the test fold.
    test_on: str = "last"
    # null: the task the shard set's manifest says (multi-label: BCE, mAP; single-label: CE,
    # accuracy); true: multi-label on single-label data (false on multi-label data is refused).
    multilabel: Optional[bool] = None


@dataclass
class FoldDataConfig(DataConfig):
    # Cross-validation: train on every fold but this one, val/test on it (null: the whole set).
    fold: Optional[int] = None
    # Each of train/val/test reads its own split of a shard set that records one (panns-prepare
    # folder / csv); null: whenever the manifest has splits and no fold is chosen (panns-train too).
    use_splits: Optional[bool] = None


@dataclass
class FinetuneTrainConfig(TrainConfig):
    """panns-finetune's config: panns-train's plus ``finetune``, ``data.fold`` and ``data.use_splits``."""

    data: FoldDataConfig = field(default_factory=FoldDataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass
class EvalConfig:
    """panns-eval's config (conf/eval.yaml)."""

    task_name: str = "eval"
    ckpt_path: str = MISSING
    data_dir: str = MISSING
    batch_size: int = 64
    num_workers: int = 2
    accelerator: str = "auto"
    # Lightning's devices: a count, a list of indices, -1 or "auto".
    devices: Any = 1
    output_json: str = "eval_metrics.json"
    paths: dict[str, Any] = field(default_factory=dict)


class ConfigError(ValueError):
    """A config that does not fit the schema; the message names the key."""


# Lightning's precision names (lightning.fabric.connector._PRECISION_INPUT, 2.6).
PRECISIONS = (
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "64",
    "32",
    "16",
    "bf16",
)
MAX_STEPS = 10**9
"""``trainer.max_steps`` above this is a typo or an "until killed" in disguise (upstream trains 600 k)."""
MAX_EPOCHS = 10**6

# conf/trainer/default.yaml's trainer.ddp_timeout_s, for configs composed without it.
DEFAULT_DDP_TIMEOUT_S = 600.0


def check_ddp_timeout(value: Any) -> float:
    """``trainer.ddp_timeout_s`` (not a Trainer argument: the DDP process group's timeout): seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(
            "trainer.ddp_timeout_s must be a number of seconds > 0 (how long a collective waits for a lost "
            f"rank before it fails), got {value!r}"
        )
    return float(value)


def validate_train_config(cfg: DictConfig) -> DictConfig:
    """Merge ``cfg`` onto the schema: unknown keys and wrong types raise ConfigError naming the key."""
    merged = _merge_onto(TrainConfig, cfg)
    _check_values(merged)
    if not OmegaConf.is_missing(merged, "optimized_metric") and merged.optimized_metric == "auto":
        raise ConfigError(
            "optimized_metric=auto is panns-finetune's (mAP or accuracy, from the task); panns-train needs a "
            "metric name, e.g. optimized_metric=val/mAP"
        )
    return merged


def validate_finetune_config(cfg: DictConfig) -> DictConfig:
    """panns-train's schema (and its value checks) plus ``finetune`` and ``data.fold``; errors name the key."""
    merged = _merge_onto(FinetuneTrainConfig, cfg)
    _check_values(merged)
    if merged.dry_run:
        raise ConfigError("dry_run=true is panns-train's (a pretraining plan); panns-finetune has no dry run")
    if merged.finetune.test_on not in ("last", "best", "auto"):
        raise ConfigError(f"finetune.test_on must be 'last', 'best' or 'auto', got {merged.finetune.test_on!r}")
    if merged.data.fold is not None and merged.data.use_splits:
        raise ConfigError(
            f"data.fold={merged.data.fold} (cross-validation) and data.use_splits=true (train/val/test) exclude each other"
        )
    return merged


def validate_eval_config(cfg: DictConfig) -> DictConfig:
    """panns-eval's schema: unknown keys, wrong types and missing required keys name the key."""
    merged = _merge_onto(EvalConfig, cfg)
    for key in ("ckpt_path", "data_dir"):
        if OmegaConf.is_missing(merged, key):
            raise ConfigError(f"{key} is required: panns-eval ckpt_path=<checkpoint> data_dir=<shard set dir>")
    if merged.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {merged.batch_size}")
    if merged.num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {merged.num_workers}")
    return merged


def stream_options(data: DictConfig) -> StreamOptions:
    """The ``data`` group's stream options (its shard-set keys left out); checks raise ValueError."""
    names = {item.name for item in dataclasses.fields(StreamOptions)}
    return StreamOptions(**{name: data[name] for name in names if name in data})


def _merge_onto(schema: type, cfg: DictConfig) -> DictConfig:
    try:
        merged: DictConfig = OmegaConf.merge(OmegaConf.structured(schema), cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        first = str(error).splitlines()[0]
        raise ConfigError(f"invalid config key '{key}': {first}") from None
    return merged


def _check_values(cfg: DictConfig) -> None:
    """Value checks a type cannot express; each names the key and what it holds."""
    problems = [f"data.{problem}" for problem in _stream_problems(cfg.data)]
    if cfg.data.sampler == "panns" and random_access_problem(cfg.data.train_urls):
        problems.append(f"data.train_urls: {random_access_problem(cfg.data.train_urls)}")
    crop = cfg.data.train_crop_seconds
    if crop is not None and not (math.isfinite(crop) and crop > 0):
        problems.append(f"data.train_crop_seconds must be a finite number > 0 or null, got {crop}")
    model = cfg.model
    problems += [
        f"model.{problem}"
        for problem in frontend_problems(
            model.sample_rate, model.window_size, model.hop_size, model.mel_bins, model.fmin, model.fmax
        )
    ]
    problems += _optim_problems(cfg.optim) + _trainer_problems(cfg.trainer)
    if problems:
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""))
    try:
        augment = OmegaConf.to_object(cfg.augment)
        assert isinstance(augment, AugmentOptions)
        augment.check()
        speed_options(cfg.speed)  # compile_mode, and sync_free needing fused_adam
    except ValueError as error:  # the messages name the keys
        raise ConfigError(str(error)) from None
    if cfg.speed.stft not in STFT_IMPLEMENTATIONS:
        raise ConfigError(f"speed.stft must be one of {list(STFT_IMPLEMENTATIONS)}, got {cfg.speed.stft!r}")
    check_ddp_timeout(cfg.trainer.get("ddp_timeout_s", DEFAULT_DDP_TIMEOUT_S))


def speed_options(speed: DictConfig) -> SpeedOptions:
    """The ``speed`` group's LightningModule levers (its checks raise ValueError naming the key)."""
    return SpeedOptions(
        channels_last=bool(speed.channels_last),
        compile=bool(speed.compile),
        compile_mode=str(speed.compile_mode),
        fused_adam=bool(speed.fused_adam),
        sync_free=bool(speed.sync_free),
    )


def _stream_problems(data: DictConfig) -> list[str]:
    try:
        stream_options(data)
    except ValueError as error:  # StreamOptions' checks name the option
        return [str(error)]
    return []


def _optim_problems(optim: DictConfig) -> list[str]:
    found = []
    for name, lowest in (("lr", "> 0"), ("eps", "> 0"), ("weight_decay", ">= 0")):
        value = optim[name]
        if not (math.isfinite(value) and (value > 0 if lowest == "> 0" else value >= 0)):
            found.append(f"optim.{name} must be a finite number {lowest}, got {value}")
    betas = list(optim.betas)
    if len(betas) != 2 or not all(math.isfinite(beta) and 0 <= beta < 1 for beta in betas):
        found.append(f"optim.betas must be two numbers in [0, 1), got {betas}")
    for name in ("warmup_steps", "max_nonfinite_steps"):
        if optim[name] < 0:
            found.append(f"optim.{name} must be >= 0, got {optim[name]}")
    return found


def _trainer_problems(trainer: Any) -> list[str]:
    """Checks of the keys of Lightning's Trainer that a typo turns into a run without end or a late crash."""
    found = []
    steps = trainer.get("max_steps")
    if not _is_int(steps) or not 1 <= steps <= MAX_STEPS:
        found.append(
            f"trainer.max_steps must be an integer in 1..{MAX_STEPS} (the run's length; with max_epochs "
            f"it stops at whichever comes first), got {steps!r}"
        )
    epochs = trainer.get("max_epochs")
    if epochs is not None and epochs != -1 and (not _is_int(epochs) or not 1 <= epochs <= MAX_EPOCHS):
        found.append(f"trainer.max_epochs must be -1 (no limit), null or an integer in 1..{MAX_EPOCHS}, got {epochs!r}")
    precision = trainer.get("precision")
    if precision is not None and str(precision) not in PRECISIONS:
        found.append(f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    for name in ("accumulate_grad_batches", "log_every_n_steps"):
        value = trainer.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            found.append(f"trainer.{name} must be an integer >= 1, got {value!r}")
    return found


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
