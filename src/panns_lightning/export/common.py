"""What both exporters share: the network as a tuple of outputs, the report, the errors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from panns_lightning.models.card import ModelCard
from panns_lightning.models.finite import require_finite
from panns_lightning.models.reader import clip_probabilities

TOLERANCE = 1e-4
VERIFY_BATCH = 1
"""Batch of the example traced; the other checks run another batch size (the batch axis is dynamic)."""


class ExportError(RuntimeError):
    """The exporter could not trace or write the model."""


class ExportVerificationError(RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


class NotRepresentableError(ExportError):
    """The network cannot be written in upstream's checkpoint format (keys or shapes upstream lacks)."""


class ExportableModel(nn.Module):
    """Zoo model → tuple of tensors (exporters want tensors, not dicts), eval mode only.

    With a ``card``, ``clipwise_output`` is what panns-tag shows: the card's activation of the
    logits (softmax for a single-label model; for multi-label the network's own sigmoids).
    """

    def __init__(self, model: nn.Module, card: ModelCard | None = None) -> None:
        super().__init__()
        self.model = model
        self.card = card
        self.output_names = output_names(model)
        # A fresh Module is in training mode, and exporters restore the wrapper's mode recursively
        # after tracing: without this the inner model would come back in training mode.
        self.eval()

    @property
    def activation(self) -> str:
        return self.card.activation if self.card is not None else "sigmoid"

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = dict(self.model(waveform))
        if self.card is not None:
            outputs["clipwise_output"] = clip_probabilities(outputs, self.card)
        return tuple(outputs[name] for name in self.output_names)


@dataclass
class ExportReport:
    """What was written, which axes are dynamic, and how closely it reproduces PyTorch."""

    path: str
    format: str
    model_name: str
    sample_rate: int
    input_samples: int
    dynamic_time: bool
    outputs: list[str]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    """Per check (``"B=1,T=16000"``), the largest absolute difference over all outputs."""
    notes: list[str] = field(default_factory=list)
    clipwise_output: str = "sigmoid"
    """The activation the file's ``clipwise_output`` has (the card's, with a card)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def output_names(model: nn.Module) -> list[str]:
    """The outputs in export order; ``framewise_output`` only for models that return it."""
    names = ["clipwise_output", "embedding"]
    if type(model).__name__ == "CnnDecisionLevel" or getattr(model, "zoo_name", "").startswith("Cnn14_DecisionLevel"):
        names.append("framewise_output")
    return names


def check_name(waveform: torch.Tensor) -> str:
    return f"B={waveform.shape[0]},T={waveform.shape[1]}"


def finite_outputs(wrapper: ExportableModel, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """PyTorch's own outputs, which must be finite: there is nothing to export or verify against otherwise."""
    wrapper.eval()
    with torch.no_grad():
        outputs = wrapper(waveform)
    name = getattr(wrapper.model, "zoo_name", type(wrapper.model).__name__)
    for output, value in zip(wrapper.output_names, outputs):
        require_finite(value, f"{name}'s {output} in PyTorch, before export")
    return outputs


@contextlib.contextmanager
def removed_on_failure(path: Path) -> Iterator[None]:
    """An export that fails its own verification leaves no file behind to be mistaken for a good one."""
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise
