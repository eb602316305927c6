"""Checks of the environment a config points at, run before any model is built or data is read.

:mod:`config_schema` checks a config against itself (keys, types, values); this module checks it
against the machine: shard directories exist and hold ``manifest.json`` (a URL's is fetched), a
checkpoint to resume from exists and is plain weights, the GPUs asked for are there. Each failure is one
:class:`ConfigError` line naming the key and the path or value, so a typo costs seconds, not a
model build, a data scan or a DDP launch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from panns_lightning.cli.config_schema import ConfigError, stream_options
from panns_lightning.data.remote import HttpOptions, is_http_url
from panns_lightning.shardset import MANIFEST_NAME, ShardSetError

SPLITS = ("train", "val", "test")
GPU_ACCELERATORS = ("gpu", "cuda")
# ckpt_path values that are not paths (train.yaml: a path, "auto" or null).
NON_PATH_CKPT = (None, "", "auto")


def preflight_train(cfg: DictConfig, gpus: bool = True) -> None:
    """panns-train: shard dirs, ``ckpt_path`` and (unless ``gpus=False``: a dry run) GPUs; call right after ``validate_train_config``."""
    data = cfg.get("data") or {}
    http = stream_options(data).http_options() if data else HttpOptions()
    for split in SPLITS:
        check_shard_dir(f"data.{split}_dir", data.get(f"{split}_dir"), http=http)
    check_resume_checkpoint("ckpt_path", cfg.get("ckpt_path"))
    trainer = cfg.get("trainer") or {}
    if gpus:
        check_gpus(trainer.get("accelerator", "auto"), trainer.get("devices", "auto"), key_prefix="trainer.")


def preflight_finetune(cfg: DictConfig) -> None:
    """panns-finetune: everything panns-train checks, plus the pretrained ``finetune.checkpoint``."""
    preflight_train(cfg)
    path = (cfg.get("finetune") or {}).get("checkpoint")
    if path:
        check_weights_file("finetune.checkpoint", path)


def preflight_eval(cfg: DictConfig) -> None:
    """panns-eval: the checkpoint file, the shard set and the GPUs."""
    check_checkpoint_exists("ckpt_path", cfg.ckpt_path)
    check_shard_dir("data_dir", cfg.data_dir, required=True)
    check_gpus(cfg.get("accelerator", "auto"), cfg.get("devices", 1), key_prefix="")


def check_shard_dir(key: str, value: Any, required: bool = False, http: HttpOptions | None = None) -> None:
    """``value`` must be a directory holding ``manifest.json``, or the http(s) URL of one (None is fine unless ``required``).

    A URL's manifest is fetched and checked (``http``: its timeout and retries).
    """
    if value is None:
        if required:
            raise ConfigError(f"{key} is required: a shard set directory holding {MANIFEST_NAME}")
        return
    if is_http_url(str(value)):
        from panns_lightning.data.shard_urls import load_manifest  # the stream's imports (torch) only when needed

        try:
            load_manifest(str(value), http or HttpOptions())
        except ShardSetError as error:
            raise ConfigError(f"{key}={value}: {error}") from None
        return
    directory = Path(str(value))
    if not directory.exists():
        raise ConfigError(
            f"{key}={directory} does not exist (expected a shard set directory holding {MANIFEST_NAME}, "
            "made by panns-prepare)"
        )
    if not directory.is_dir():
        raise ConfigError(
            f"{key}={directory} is not a directory (expected a shard set directory holding {MANIFEST_NAME})"
        )
    if not (directory / MANIFEST_NAME).is_file():
        raise ConfigError(
            f"{key}={directory} has no {MANIFEST_NAME}: not a shard set, or its panns-prepare conversion "
            "did not finish (the manifest is written last)"
        )


def check_checkpoint_exists(key: str, value: Any) -> Path:
    """``value`` must name an existing file; returns it as a Path."""
    path = Path(str(value))
    if path.is_dir():
        raise ConfigError(f"{key}={path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise ConfigError(f"{key}={path} does not exist")
    return path


def check_weights_file(key: str, value: Any) -> Any:
    """The file exists and loads weights-only (a memory-mapped peek); returns its content."""
    from panns_lightning.models.checkpoint import CheckpointReadError, load_weights_only

    path = check_checkpoint_exists(key, value)
    try:
        return load_weights_only(path, mmap=True)
    except CheckpointReadError as error:
        raise ConfigError(f"{key}: {' '.join(str(error).split())}") from None


def check_resume_checkpoint(key: str, value: Any) -> None:
    """A resume checkpoint: null/"auto", or an existing, plain-weights Lightning training checkpoint."""
    if value in NON_PATH_CKPT:
        return
    content = check_weights_file(key, value)
    if not isinstance(content, Mapping) or "state_dict" not in content:
        raise ConfigError(
            f"{key}={value} is not a Lightning training checkpoint (no 'state_dict'); to start from "
            "published PANNs weights use panns-finetune finetune.checkpoint=<file>"
        )


def check_gpus(accelerator: Any, devices: Any, key_prefix: str = "trainer.") -> None:
    """With a GPU accelerator, the machine must have CUDA and at least the GPUs ``devices`` asks for."""
    if str(accelerator).lower() not in GPU_ACCELERATORS:
        return
    available = cuda_device_count()
    if available == 0:
        raise ConfigError(
            f"{key_prefix}accelerator={accelerator} but this machine has no CUDA GPU "
            f"(torch.cuda.is_available() is False); use {key_prefix}accelerator=cpu"
        )
    wanted = requested_gpus(devices, f"{key_prefix}devices")
    if isinstance(wanted, int) and wanted > available:
        raise ConfigError(
            f"{key_prefix}devices={devices} but only {available} CUDA GPU{'s' if available != 1 else ''} "
            f"{'are' if available != 1 else 'is'} visible on this machine"
        )
    if isinstance(wanted, list) and wanted and max(wanted) >= available:
        raise ConfigError(
            f"{key_prefix}devices={devices} names GPU {max(wanted)}, but only GPUs 0..{available - 1} "
            "are visible on this machine"
        )


def requested_gpus(devices: Any, key: str) -> int | list[int] | None:
    """Lightning's ``devices`` as a GPU count, a list of indices, or None for "all of them"."""
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return None
        try:
            return [int(part) for part in text.split(",") if part.strip()] if "," in text else int(text)
        except ValueError:
            raise ConfigError(_devices_message(key, devices)) from None
    if isinstance(devices, bool):
        raise ConfigError(_devices_message(key, devices))
    if isinstance(devices, int):
        if devices == -1:
            return None
        if devices < 1:
            raise ConfigError(_devices_message(key, devices))
        return devices
    if isinstance(devices, Sequence):  # list, tuple or OmegaConf ListConfig
        indices = list(devices)
        if not all(isinstance(index, int) and not isinstance(index, bool) and index >= 0 for index in indices):
            raise ConfigError(_devices_message(key, devices))
        return indices
    raise ConfigError(_devices_message(key, devices))


def cuda_device_count() -> int:
    """Visible CUDA GPUs, counted without initialising CUDA (Lightning's NVML-based check)."""
    from lightning.fabric.accelerators.cuda import is_cuda_available, num_cuda_devices

    return num_cuda_devices() if is_cuda_available() else 0


def _devices_message(key: str, devices: Any) -> str:
    return f"{key}={devices!r} is not a GPU count (>= 1), a list of GPU indices, -1 or 'auto'"
