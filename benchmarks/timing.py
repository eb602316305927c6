"""The bare training step of a :class:`~panns_lightning.training.module.TaggingModule`, timed.

"Bare" = what one optimizer step of ``panns-train`` costs when the data is already in host memory
and nothing else runs: the host batch copied to the device as the loader delivers it (pinned
memory is copied with ``non_blocking``), ``training_step`` under the run's autocast, ``zero_grad``,
``backward``, the module's non-finite guard, ``optimizer.step``. No Lightning loop, loader,
logging or checkpointing: the full loop (``benchmarks/bench_loop.py``) is measured against this.

    from timing import bare_step_rate       # benchmarks/ on sys.path
    rate = bare_step_rate(module, batch, device=torch.device("cuda"), precision="bf16-mixed")
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

# trainer.precision values (and the short forms speed_facts uses) → autocast dtype, None: fp32.
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "32-true": None,
    "32": None,
    "bf16-mixed": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` ("32-true"/"32": None, "bf16-mixed"/"bf16": bfloat16)."""
    try:
        return AUTOCAST_DTYPES[str(precision)]
    except KeyError:
        raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, got {precision!r}") from None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on ``device``; pinned ones copied with ``non_blocking`` (what Lightning does)."""
    return {
        key: value.to(device, non_blocking=value.is_pinned()) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def bare_step_rate(
    module: torch.nn.Module,
    batch: Mapping[str, Any],
    *,
    device: torch.device | str,
    precision: str = "32-true",
    steps: int = 20,
    warmup: int = 5,
    review_every: int = 10,
) -> float:
    """Clips per second of the bare training step on one fixed host ``batch``.

    Args:
        module: a ``TaggingModule`` (or anything with ``training_step``, ``guard_update``,
            ``configure_optimizers`` and ``configure_model``). It is moved to ``device``, put in
            train mode, and ``configure_model()`` applies its channels-last / compile levers; its
            parameters are updated by the timed steps.
        batch: a host batch as the train loader yields it: ``{"waveform": [B, T] float32 or int16,
            "target": [B, C] float32, "key": [...]}``. Pin it (or take it from a ``pin_memory``
            loader) to time the pinned, non-blocking copy; it is copied to the device every step.
        device: where to train.
        precision: ``trainer.precision`` ("32-true" or "bf16-mixed"; "32"/"bf16" also accepted):
            bf16 runs ``training_step`` under ``torch.autocast(device.type, torch.bfloat16)``.
        steps: timed steps.
        warmup: untimed steps first (cuDNN algorithm choice, allocator, ``torch.compile``).
        review_every: ``guard_update(review=True)`` every this many steps, as Lightning does every
            ``trainer.log_every_n_steps`` (where a sync-free run lets the host read the device).

    Returns:
        ``B x steps / seconds``: clips read per second (with mixup, the network trains on half as
        many mixed examples). On CUDA the device is synchronised before each clock reading.
    """
    device = torch.device(device)
    step = module_step(module, batch, device=device, precision=precision, review_every=review_every)
    return time_steps(step, int(batch["waveform"].shape[0]), device=device, steps=steps, warmup=warmup).clips_per_s


@dataclass
class StepTiming:
    clips_per_s: float
    first_step_s: float  # the first warm-up step alone (compilation shows here)


def module_step(
    module: torch.nn.Module, batch: Mapping[str, Any], *, device: torch.device, precision: str, review_every: int
) -> Callable[[int], None]:
    """One training step of ``module`` on ``batch`` as Lightning runs it, as a function of the step index."""
    if review_every < 1:
        raise ValueError(f"review_every must be >= 1, got {review_every}")
    dtype = autocast_dtype(precision)
    module.to(device).train()
    module.configure_model()
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, Mapping) else configured

    def step(index: int) -> None:
        device_batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            loss = module.training_step(device_batch, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        module.guard_update(optimizer, index, scaled=False, review=(index + 1) % review_every == 0)
        optimizer.step()

    return step


def time_steps(step: Callable[[int], None], clips: int, *, device: torch.device, steps: int, warmup: int) -> StepTiming:
    """Run ``warmup`` untimed then ``steps`` timed calls of ``step``; clips/s over the timed ones."""
    if steps < 1 or warmup < 1:
        raise ValueError(f"need steps >= 1 and warmup >= 1; got {steps}, {warmup}")
    with warnings.catch_warnings():
        # self.log() without a Trainer warns (and does nothing): expected here.
        warnings.filterwarnings("ignore", message=r".*self\.log\(.*")
        start = time.perf_counter()
        step(0)
        synchronize(device)
        first = time.perf_counter() - start
        for index in range(1, warmup):
            step(index)
        synchronize(device)
        start = time.perf_counter()
        for index in range(warmup, warmup + steps):
            step(index)
        synchronize(device)
        seconds = time.perf_counter() - start
    return StepTiming(clips * steps / seconds, first)
