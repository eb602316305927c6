"""Loading this project's Lightning checkpoints safely (``weights_only=True``) for eval and tagging.

Every read goes through :func:`panns_lightning.models.checkpoint.load_weights_only`: a file that
would run code when unpickled is refused (:class:`UnsafeCheckpointError`, naming the file) and a
missing path is a one-line ``FileNotFoundError``. A state_dict that does not fit the network its
own hyper-parameters describe is a :class:`CheckpointMismatchError` naming the keys and class counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from panns_lightning.models.checkpoint import (
    CheckpointMismatchError,
    CheckpointReadError,
    classes_num,
    compare_state_dicts,
    examples,
    load_weights_only,
)
from panns_lightning.training.module import TaggingModule

MODEL_PREFIX = "model."


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, read weights-only: a checkpoint can never run code on load."""
    content = load_weights_only(path)
    if not isinstance(content, Mapping):
        raise CheckpointReadError(
            f"{path} holds a {type(content).__name__}, not a checkpoint dict"
        )
    return dict(content)


def load_tagging_module(path: str | Path) -> TaggingModule:
    """Rebuild the TaggingModule a checkpoint was trained with (model config and labels included)."""
    checkpoint = read_checkpoint(path)
    if "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(
            f"{path} is not a panns_lightning training checkpoint (expected keys 'hyper_parameters' and "
            f"'state_dict', found {sorted(map(str, checkpoint))[:8]}); for published PANNs files use "
            "panns_lightning.models.load_panns_checkpoint"
        )
    if "mode" in checkpoint["hyper_parameters"]:  # written by FineTuneModule (panns-finetune)
        from panns_lightning.training.finetune import load_finetune_module

        return load_finetune_module(path, checkpoint)
    module = build_from_hyper_parameters(TaggingModule, checkpoint["hyper_parameters"], path)
    load_module_state(module, checkpoint["state_dict"], path)
    module.eval()
    return module


def build_from_hyper_parameters(cls: type, hyper: Mapping[str, Any], path: str | Path) -> Any:
    """``cls(**hyper)``; hyper-parameters another module wrote are named instead of a bare TypeError."""
    for key in ("model_config", "labels"):
        if key not in hyper:
            raise ValueError(
                f"{path} was not written by a panns_lightning {cls.__name__}: its hyper_parameters lack "
                f"'{key}' (found {sorted(map(str, hyper))[:8]})"
            )
    try:
        return cls(**hyper)
    except TypeError as error:
        raise ValueError(f"{path}: its hyper_parameters do not fit {cls.__name__}: {error}") from error


def load_module_state(module: nn.Module, state: Mapping[str, Any], path: str | Path) -> None:
    """Strict ``load_state_dict``, with a mismatch named by keys, shapes and class counts."""
    problems = state_mismatch(module.state_dict(), state)
    if problems:
        model_config = dict(getattr(module, "hparams", {})).get("model_config") or {}
        name = model_config.get("name", type(module).__name__)
        raise CheckpointMismatchError(
            f"{path}: its state_dict does not fit the {name} its hyper_parameters describe: {'; '.join(problems)}"
        )
    module.load_state_dict(state)


def state_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two state_dicts (empty when they fit)."""
    missing, unexpected, misshaped = (sorted(keys) for keys in compare_state_dicts(expected, given))
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys missing from the file ({examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({examples(unexpected)})")
    if misshaped:
        problems.append(f"{len(misshaped)} keys with other shapes ({examples([_shapes(k, given, expected) for k in misshaped])})")
    file_classes, model_classes = classes_num(given, MODEL_PREFIX), classes_num(expected, MODEL_PREFIX)
    if problems and None not in (file_classes, model_classes) and file_classes != model_classes:
        problems.append(f"the file's classifier has {file_classes} classes, the model expects {model_classes}")
    return problems


def _shapes(key: str, given: Mapping[str, Any], expected: Mapping[str, torch.Tensor]) -> str:
    value = given[key]
    found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
    return f"{key}: file {found} vs model {tuple(expected[key].shape)}"
