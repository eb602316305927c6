"""Loading this project's Lightning checkpoints safely (``weights_only=True``) for eval and tagging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from panns_lightning.training.module import TaggingModule


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with ``weights_only=True``: a checkpoint can never run code on load."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle.UnpicklingError and friends carry long messages
        raise ValueError(
            f"{path} could not be loaded as a weights-only checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); files that need arbitrary code to "
            "load are refused"
        ) from error


def load_tagging_module(path: str | Path) -> TaggingModule:
    """Rebuild the TaggingModule a checkpoint was trained with (model config and labels included)."""
    checkpoint = read_checkpoint(path)
    if "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(
            f"{path} is not a panns_lightning training checkpoint (expected keys 'hyper_parameters' and "
            f"'state_dict', found {sorted(checkpoint)[:8]}); for published PANNs files use "
            "panns_lightning.models.load_panns_checkpoint"
        )
    if "mode" in checkpoint["hyper_parameters"]:  # written by FineTuneModule (panns-finetune)
        from panns_lightning.training.finetune import load_finetune_module

        return load_finetune_module(path, checkpoint)
    module = TaggingModule(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    return module
