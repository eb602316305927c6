"""How a training process runs fast: the levers that change speed, never the maths being trained.

Each lever is measured on and off by ``benchmarks/bench_train.py`` (docs/speed.md); the
``speed`` config group picks a combination (``speed=gpu`` in the GPU trainer presets,
``speed=cpu`` otherwise, ``speed=reference`` for upstream's way: every lever off). The options
that change how the network is *built* (``stft``, ``wave_conv2d``) travel in the model config, and
those of the data path (``int16_batches``, ``pin_memory``) in the data module; the ones here are
the LightningModule's and are not saved in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class SpeedOptions:
    """The LightningModule's speed levers (all off: upstream's way).

    Attributes:
        channels_last: NHWC memory format for the network's 4-D tensors (cuDNN's fastest convs).
        compile: ``torch.compile`` the network in place (``nn.Module.compile``: keys unchanged).
        compile_mode: ``torch.compile``'s mode.
        fused_adam: Adam's fused kernel (``fused=True``): one launch for all parameters.
        sync_free: no host sync in the training step: the non-finite check stays on the device
            (it needs ``fused_adam``) and the host reads losses only when Lightning logs.
    """

    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    fused_adam: bool = False
    sync_free: bool = False

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"speed.compile_mode must be one of {list(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.sync_free and not self.fused_adam:
            raise ValueError(
                "speed.sync_free needs speed.fused_adam: a non-finite step is skipped inside the fused "
                "optimizer kernel (found_inf), which is what lets the host go on without waiting"
            )

    def adam_options(self) -> dict[str, Any]:
        """Keyword arguments for ``torch.optim.Adam``."""
        return {"fused": True} if self.fused_adam else {}


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small host tensor to ``device`` without making the host wait (pinned + non_blocking).

    A plain ``.to("cuda")`` of pageable memory synchronises the stream: the host would wait for
    every queued kernel of the step before it could go on.
    """
    if tensor.device == device:
        return tensor
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
