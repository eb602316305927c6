"""Rebuild the training module (``TaggingModule`` / ``FineTuneModule``) a Lightning checkpoint holds.

Running a model (tagging, HEAR, export, panns-eval, a fine-tuning backbone) does not come here: the
one reader of model files is :mod:`panns_lightning.models.reader`, which needs neither Lightning nor
this package. This module is for code that wants the LightningModule itself, hyper-parameters and
all. A checkpoint says what it is: :func:`checkpoint_kind` reads that from its contents (a
``FineTuneModule``'s hyper-parameters carry ``mode``; a ``TaggingModule``'s carry ``model_config``
and ``labels``; anything else is plain weights, a published PANNs file or a bare state_dict, for
``panns_lightning.models.load_panns_checkpoint``). :func:`load_tagging_module` rebuilds the module
a Lightning checkpoint was trained with, whichever of the two it is, after its model card (or its
config) has been checked like every reader checks it.

Every read goes through :func:`panns_lightning.models.checkpoint.load_weights_only`: a file that
would run code when unpickled is refused (:class:`UnsafeCheckpointError`, naming the file) and a
missing path is a one-line ``FileNotFoundError``. A state_dict that does not fit the network its
own hyper-parameters describe is a :class:`CheckpointMismatchError` worded by
:class:`~panns_lightning.models.checkpoint.StateDictMismatch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from torch import nn

from panns_lightning.models.checkpoint import (
    LIGHTNING_PREFIX,
    CheckpointMismatchError,
    CheckpointReadError,
    StateDictMismatch,
    load_weights_only,
)
from panns_lightning.models.reader import lightning_card
from panns_lightning.training.finetune import FineTuneModule
from panns_lightning.training.module import TaggingModule

CheckpointKind = Literal["tagging", "finetune", "weights"]


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's top-level dict, read weights-only: a checkpoint can never run code on load.

    ``mmap=True`` maps the file (a cheap peek at a large checkpoint; tensors are read when used).
    """
    content = load_weights_only(path, mmap=mmap)
    if not isinstance(content, Mapping):
        raise CheckpointReadError(f"{path} holds a {type(content).__name__}, not a checkpoint dict")
    return dict(content)


def checkpoint_kind(content: Mapping[str, Any]) -> CheckpointKind:
    """What a checkpoint's contents say it is: one of our two modules, or plain weights."""
    hyper = content.get("hyper_parameters")
    if not isinstance(hyper, Mapping) or "state_dict" not in content:
        return "weights"
    return "finetune" if "mode" in hyper else "tagging"


def load_tagging_module(path: str | Path, content: Mapping[str, Any] | None = None) -> TaggingModule:
    """Rebuild the module a Lightning checkpoint was trained with (model config and labels included), in eval mode.

    A fine-tuning checkpoint gives a :class:`FineTuneModule` (a TaggingModule). ``content`` is the
    already-read checkpoint, when the caller has it (no second read of a large file).
    """
    checkpoint = dict(content) if content is not None else read_checkpoint(path)
    kind = checkpoint_kind(checkpoint)
    if kind == "weights":
        raise ValueError(
            f"{path} is not a panns_lightning training checkpoint (expected keys 'hyper_parameters' and "
            f"'state_dict', found {sorted(map(str, checkpoint))[:8]}); for published PANNs files use "
            "panns_lightning.models.load_panns_checkpoint"
        )
    lightning_card(checkpoint, Path(path))  # every value checked before a network is built
    hyper = dict(checkpoint["hyper_parameters"])
    module_class: type[TaggingModule] = TaggingModule
    if kind == "finetune":
        module_class = FineTuneModule
        hyper["checkpoint"] = None  # the weights come from this file, not the pretrained one
    module = build_from_hyper_parameters(module_class, hyper, path)
    load_module_state(module, checkpoint["state_dict"], path)
    module.eval()
    return module


def checkpoint_model_config(path: str | Path) -> dict[str, Any] | None:
    """The model config a panns_lightning checkpoint carries (name + front end), or None for other files.

    Read weights-only and memory-mapped (a peek, not a full read); an unsafe or unreadable file
    raises :class:`CheckpointReadError` naming it.
    """
    content = load_weights_only(path, mmap=True)
    hyper = content.get("hyper_parameters") if isinstance(content, Mapping) else None
    config = hyper.get("model_config") if isinstance(hyper, Mapping) else None
    return dict(config) if isinstance(config, Mapping) else None


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
    mismatch = StateDictMismatch.between(module.state_dict(), state, prefix=LIGHTNING_PREFIX)
    if mismatch:
        model_config = dict(getattr(module, "hparams", {})).get("model_config") or {}
        name = model_config.get("name", type(module).__name__)
        raise CheckpointMismatchError(
            f"{path}: its state_dict does not fit the {name} its hyper_parameters describe: {mismatch.summary()}"
        )
    module.load_state_dict(state)
